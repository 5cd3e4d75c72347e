"""A throwaway PostgreSQL server for tests, as a pytest plugin.

Load it with ``pytest -p tests.postgres``. It provides two fixtures:

- ``postgres_server`` (session): starts one server for the whole run and yields a
  :class:`PostgresServer` (``host``, ``port``, ``user``, ``create_database()``).
- ``postgres_url`` (function): a fresh, empty database per test, as a SQLAlchemy URL.

Where no PostgreSQL server binaries are installed the fixtures skip, except under
``CI=true``, where they fail: in CI a skip would hide a missing install.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple, NoReturn

import pytest

HOST = "127.0.0.1"
USER = "postgres"
# Seconds pg_ctl waits for the server to accept connections (it usually takes well under 1 s).
START_TIMEOUT_S = 30
# Lines of the server log shown when the server does not start.
LOG_TAIL_LINES = 40
# Settings that trade durability for speed: the data is thrown away after the run.
FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


def _unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it under CI=true, where a skip would hide a missing install."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def find_bindir() -> Path | None:
    """Return the directory holding initdb and pg_ctl, or None where none is installed.

    ``initdb`` on PATH wins, resolved through symlinks to the directory that also holds
    pg_ctl and postgres; otherwise the newest /usr/lib/postgresql/*/bin (Debian and Ubuntu
    install the server there, off PATH).
    """
    candidates = []
    on_path = shutil.which("initdb")
    if on_path is not None:
        candidates.append(Path(on_path).resolve().parent)
    versioned = glob.glob("/usr/lib/postgresql/*/bin")
    versioned.sort(key=lambda p: _version_key(Path(p).parent.name), reverse=True)
    candidates.extend(Path(p) for p in versioned)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _free_port() -> int:
    # The port is free now; another process could take it before the server binds, which
    # _start_server answers by trying again with a new port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class PostgresServer(NamedTuple):
    """A running server that trusts every connection from 127.0.0.1 as ``user``."""

    host: str
    port: int
    user: str

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a unique name unless given) and return its SQLAlchemy URL."""
        import psycopg
        from psycopg import sql

        name = name or f"test_{uuid.uuid4().hex}"
        with psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return f"{_url_scheme()}://{self.user}@{self.host}:{self.port}/{name}"


def _url_scheme() -> str:
    """``postgresql`` where SQLAlchemy's default PostgreSQL driver is psycopg 3 (2.1 and later).

    SQLAlchemy 2.0 maps the plain scheme to psycopg2, so there the driver is named.
    """
    from sqlalchemy.engine import make_url

    default_driver = make_url("postgresql://").get_dialect().driver
    return "postgresql" if default_driver == "psycopg" else "postgresql+psycopg"


class _Runner:
    """Runs server commands as the ``postgres`` user: the server refuses to run as root."""

    def __init__(self) -> None:
        self.prefix: list[str] = []
        self.owner: tuple[int, int] | None = None
        if os.geteuid() != 0:
            return
        try:
            entry = pwd.getpwnam(USER)
        except KeyError:
            _unavailable(f"running as root and there is no {USER!r} user to run PostgreSQL")
        runuser = shutil.which("runuser")
        if runuser is None:
            _unavailable("running as root and runuser is missing, so PostgreSQL cannot start")
        self.prefix = [runuser, "-u", USER, "--"]
        self.owner = (entry.pw_uid, entry.pw_gid)

    def give(self, path: Path) -> None:
        """Let the server user own and write ``path`` (mkdtemp makes it 0700, owned by us)."""
        path.chmod(0o700)
        if self.owner is not None:
            os.chown(path, *self.owner)

    def run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.prefix + args,
            capture_output=True,
            text=True,
            timeout=timeout,
            # Do not let the caller's PG* variables (PGDATA, PGPORT, ...) steer the tools.
            env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
        )


def _log_tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "(no server log)"
    return "\n".join(lines[-LOG_TAIL_LINES:]) or "(server log is empty)"


def _start_server(bindir: Path, runner: _Runner, root: Path, attempts: int = 3) -> int:
    """initdb in ``root``/data and start the server; return its port."""
    data, log = root / "data", root / "server.log"
    done = runner.run(
        [
            str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", USER,
            "-E", "UTF8", "--locale=C", "--no-sync",
        ],
        timeout=120,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")

    for attempt in range(1, attempts + 1):
        port = _free_port()
        settings = {
            **FAST_SETTINGS,
            "port": str(port),
            "listen_addresses": f"'{HOST}'",
            "unix_socket_directories": f"'{root}'",
        }
        # Later lines win, so appending on a retry replaces the port of the failed attempt.
        with (data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        start = [
            str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log),
            "-w", "-t", str(START_TIMEOUT_S), "start",
        ]  # fmt: skip
        try:
            done = runner.run(start, timeout=START_TIMEOUT_S + 10)
        except subprocess.TimeoutExpired:
            done = None
        if done is not None and done.returncode == 0:
            return port
        tail = _log_tail(log)
        # Stop a server that started too slowly, so it does not outlive the run.
        runner.run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], 30)
        if "could not bind" in tail and attempt < attempts:
            continue  # another process took the port between _free_port and the bind
        output = "timed out" if done is None else f"{done.returncode}: {done.stdout}{done.stderr}"
        raise RuntimeError(
            f"PostgreSQL did not start on {HOST}:{port} (pg_ctl {output})\n"
            f"server log {log}:\n{tail}"
        )
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole test session, thrown away at the end."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg (psycopg[binary]) is not installed")
    bindir = find_bindir()
    if bindir is None:
        _unavailable(
            "PostgreSQL server binaries not found (no initdb on PATH or in "
            "/usr/lib/postgresql/*/bin)"
        )
    runner = _Runner()
    root = Path(tempfile.mkdtemp(prefix="search-pg-"))
    runner.give(root)
    try:
        port = _start_server(bindir, runner, root)
        try:
            yield PostgresServer(host=HOST, port=port, user=USER)
        finally:
            runner.run(
                [str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"],
                timeout=60,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The SQLAlchemy URL of a new, empty database on the session's server."""
    return postgres_server.create_database()
