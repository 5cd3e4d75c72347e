"""Storage: Optuna's RDB storage (SQLite by default, PostgreSQL for many workers)."""

from __future__ import annotations

import re
from pathlib import Path

import optuna

from search.errors import UserError

_PASSWORD = re.compile(r"(://[^:/@]+:)([^@]*)(@)")


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    return _PASSWORD.sub(r"\1***\3", url)


def open_storage(url: str, *, heartbeat_interval: int | None = None,
                 grace_period: int | None = None,
                 must_exist: bool = False) -> optuna.storages.RDBStorage:
    """Open (and create tables in) the storage at ``url``; fails fast with one line.

    ``must_exist``: for commands that only read, a missing SQLite file is an error
    rather than a new empty database left behind.
    """
    import sqlalchemy

    if "://" not in url:
        raise UserError(f"--storage: not a database URL (e.g. sqlite:///studies/x.db or "
                        f"postgresql://user@host/db), got {mask_url(url)!r}")
    try:
        sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise UserError(f"--storage: malformed database URL, got {mask_url(url)!r}") from None
    parsed = sqlalchemy.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database)
        if path.is_dir():
            raise UserError(f"--storage: is a directory, expected a SQLite file, got {url!r}")
        if must_exist and not path.exists():
            raise UserError(f"--storage: no such study database {str(path)!r}")
        if not path.parent.exists():
            raise UserError(f"--storage: directory {str(path.parent)!r} does not exist")
    engine_kwargs = {}
    if url.startswith("postgresql"):
        engine_kwargs = {"connect_args": {"connect_timeout": 5}, "pool_pre_ping": True}
    elif url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                          heartbeat_interval=heartbeat_interval,
                                          grace_period=grace_period)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ModuleNotFoundError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--storage: cannot open {mask_url(url)}: {mask_url(first)[:200]}"
                        ) from None
