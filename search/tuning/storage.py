"""Storage: Optuna's own. RDB storage through SQLAlchemy (an SQLite file by default,
PostgreSQL when many workers on many machines share a study), or a journal file
(``journal:///path``) for several local processes without a server.

RDB storages run with Optuna's heartbeats, journal files with ours (a file per worker
beside the journal, ``search/tuning/liveness.py``): a worker that dies mid-trial stops
beating, and any worker fails its trial after the grace period and re-queues its params
(bounded retries).
"""

from __future__ import annotations

import os
import re
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from search.errors import UserError

# Heartbeats and retries are stable in practice; Optuna still labels them experimental.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own lines say what happened

# user:password@host (the password may hold '@'; the host never does), and ?password=...
_PASSWORD = re.compile(r"(://[^:/@\s]*:)(.*?)(@[^@/\s?]+)(?=[/?\s,;]|$)")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&\s]*", re.IGNORECASE)
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 30
MAX_RETRIES = 2  # a trial whose worker died is re-run at most this many times


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    return _QUERY_PASSWORD.sub(r"\1***", _PASSWORD.sub(r"\1***\3", url))


def retry_callback() -> optuna.storages.RetryHeartbeatStaleTrialCallback:
    """Re-queues a failed trial's params (same config) as a WAITING trial, bounded."""
    return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)


def open_storage(url: str, *, must_exist: bool = False, heartbeat: int | None = None,
                 grace: int | None = None) -> optuna.storages.BaseStorage:
    """Open (and create tables in) the storage at ``url``; fails fast with one line.

    ``must_exist``: for commands that only read, a missing file is an error rather than
    a new empty database left behind. ``heartbeat`` and ``grace`` (seconds) default to
    ``$SEARCH_HEARTBEAT_SECONDS`` / ``$SEARCH_GRACE_SECONDS``, else 10 and 30.
    """
    import sqlalchemy

    heartbeat = heartbeat or env_seconds("SEARCH_HEARTBEAT_SECONDS", HEARTBEAT_SECONDS)
    grace = grace or env_seconds("SEARCH_GRACE_SECONDS", GRACE_SECONDS)
    if url.startswith("journal://"):
        return _journal(url, must_exist, heartbeat, grace)
    if "://" not in url:
        raise UserError(f"--storage: not a storage URL (e.g. sqlite:///studies/x.db, "
                        f"journal:///studies/x.journal or postgresql://user@host/db), "
                        f"got {mask_url(url)!r}")
    try:
        parsed = sqlalchemy.engine.make_url(url)
        parsed.port  # noqa: B018 - a malformed port raises here, not later
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise UserError(f"--storage: malformed database URL, got {mask_url(url)!r}") from None
    backend = parsed.get_backend_name()
    engine_kwargs: dict = {}
    existing = False  # an SQLite file that exists has its tables: no need to make them
    if backend == "sqlite":
        if parsed.database not in (None, "", ":memory:"):
            _check_file(Path(parsed.database), must_exist, url)
            existing = must_exist
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif backend == "postgresql":
        # A clear message within seconds rather than a hang on an unreachable host.
        engine_kwargs = {"connect_args": {"connect_timeout": 5}, "pool_pre_ping": True}
    try:
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat,
            grace_period=grace, heartbeat_stale_trial_callback=retry_callback(),
            skip_table_creation=existing)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--storage: cannot open {mask_url(url)}: {mask_url(first)[:200]}"
                        ) from None


def env_seconds(name: str, default: int) -> int:
    """A whole number of seconds >= 1 from the environment variable ``name``."""
    text = os.environ.get(name)
    if text is None:
        return default
    if not text.strip().isdigit() or int(text) < 1:
        raise UserError(f"${name}: must be a whole number of seconds >= 1, got {text!r}")
    return int(text)


@dataclass(frozen=True)
class JournalLiveness:
    """Where a journal's workers beat (one file each) and how often, in seconds."""

    folder: Path
    interval: float
    grace: float


_JOURNALS: weakref.WeakKeyDictionary[Any, JournalLiveness] = weakref.WeakKeyDictionary()


def journal_liveness(storage: Any) -> JournalLiveness | None:
    """The heartbeat settings of a journal storage opened here; None for any other."""
    return _JOURNALS.get(storage)


def _journal(url: str, must_exist: bool, heartbeat: int, grace: int
             ) -> optuna.storages.JournalStorage:
    from optuna.storages.journal import JournalFileBackend

    path = Path(url.removeprefix("journal://"))
    _check_file(path, must_exist, url)
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    _JOURNALS[storage] = JournalLiveness(path.with_name(path.name + ".workers"), heartbeat,
                                         grace)
    return storage


def _check_file(path: Path, must_exist: bool, url: str) -> None:
    if path.is_dir():
        raise UserError(f"--storage: is a directory, expected a file, got {mask_url(url)!r}")
    if must_exist and not path.exists():
        raise UserError(f"--storage: no such study file {str(path)!r}")
    if not path.parent.exists():
        raise UserError(f"--storage: directory {str(path.parent)!r} does not exist")


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")
