#!/usr/bin/env bash
# System packages the tests use that pip cannot install: PostgreSQL server binaries (the
# throwaway server of tests/postgres.py) and Chromium (the report's browser test).
# Installs only what is missing, only as root with apt-get; otherwise says what is missing.
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || need+=(postgresql)
command -v chromium >/dev/null || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing system packages: ${need[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "missing system packages (tests that need them skip): ${need[*]}" >&2
fi
