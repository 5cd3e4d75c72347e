"""Storage: password masking, one-line failures for every bad URL, heartbeats, journal files.

Every failure of ``open_storage`` is a ``UserError``: one line, the password masked, and
nothing created on disk.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import search.tuning.storage
from search.errors import UserError
from search.tuning.storage import mask_url, open_storage
from tests import faultmodels as fm

optuna.logging.set_verbosity(optuna.logging.WARNING)
# Heartbeats and retries are experimental in Optuna; search.tuning.storage silences that at import,
# which pytest's per-test warning filters undo.
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

SECRET = "hunter2"


# --- mask_url --------------------------------------------------------------------------------

@pytest.mark.parametrize("url, masked", [
    ("postgresql://user:hunter2@db.example.com/studies",
     "postgresql://user:***@db.example.com/studies"),
    ("postgresql+psycopg://user:hunter2@10.0.0.5:5432/studies",
     "postgresql+psycopg://user:***@10.0.0.5:5432/studies"),
    ("mysql+pymysql://root:hunter2@localhost/x", "mysql+pymysql://root:***@localhost/x"),
    # Percent-encoded special characters (@ : / % in the password), as URLs should carry them.
    ("postgresql://user:hun%40ter%3A2%2F%25@host/db", "postgresql://user:***@host/db"),
    # Raw special characters that SQLAlchemy still reads as part of the password.
    ("postgresql://user:hun:ter2@host/db", "postgresql://user:***@host/db"),
    ("postgresql://user:hun/ter2@host/db", "postgresql://user:***@host/db"),
    ("postgresql://user:hun ter#2!$&'()*+,;=@host/db", "postgresql://user:***@host/db"),
    ("postgresql://user.name-1:hunter2@host/db", "postgresql://user.name-1:***@host/db"),
    # No password: nothing to hide, nothing changed.
    ("postgresql://user@host/db", "postgresql://user@host/db"),
    ("sqlite:///studies/digits.db", "sqlite:///studies/digits.db"),
    ("journal:///studies/x.journal", "journal:///studies/x.journal"),
])
def test_mask_url_hides_the_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_mask_url_hides_every_url_in_a_message() -> None:
    text = ("cannot open postgresql://a:hunter2@h1/db, then "
            "postgresql+psycopg://b:hunter2@h2:5432/db")
    assert mask_url(text) == ("cannot open postgresql://a:***@h1/db, then "
                              "postgresql+psycopg://b:***@h2:5432/db")


@pytest.mark.parametrize("url", [
    # Fixed bug (search/tuning/storage.py, _PASSWORD): the username part must be non-empty, so a URL
    # with a password and no user name is returned unmasked.
    "postgresql://:hunter2@host/db",
    # Fixed bug (storage.py, _PASSWORD): `[^@]*` stops at the first "@", so a raw "@" in
    # the password leaves its tail ("ter2@host") in the clear.
    "postgresql://user:hun@ter2@host/db",
    # Fixed bug (search/tuning/storage.py, mask_url): libpq and psycopg take the password as a query
    # parameter too; it is not masked.
    "postgresql://user@host/db?password=hunter2",
])
def test_mask_url_hides_the_password_in_its_other_forms(url: str) -> None:
    assert "ter2" not in mask_url(url), mask_url(url)


# --- open_storage: bad URLs ----------------------------------------------------------------------

def _one_line_error(url: str, **kwargs: object) -> str:
    with pytest.raises(UserError) as info:
        open_storage(url, **kwargs)
    text = str(info.value)
    assert "\n" not in text and text.startswith("--storage: "), text
    assert SECRET not in text, text
    return text


@pytest.mark.parametrize("url, says", [
    ("studies/x.db", "not a storage URL"),
    ("sqlite:/x.db", "not a storage URL"),
    ("://", "malformed"),
    ("nosuchdb://user:hunter2@host/db", "cannot open nosuchdb://user:***@host/db"),
    ("postgresql+nodriver://user:hunter2@host/db", "cannot open"),
])
def test_open_storage_refuses_a_malformed_url_in_one_line(url: str, says: str) -> None:
    assert says in _one_line_error(url)


@pytest.mark.parametrize("url", [
    # Fixed bug (storage.py, open_storage): sqlalchemy's make_url raises ValueError for a
    # port that is not a number; only ArgumentError is caught, so the CLI shows a traceback.
    "postgresql://user:hunter2@host:abc/db",
    "postgresql://user:hunter2@[::1/db",
])
def test_open_storage_refuses_a_bad_port_in_one_line(url: str) -> None:
    assert "postgresql://user:***@" in _one_line_error(url)


def _closed_port() -> int:
    with socket.socket() as s:  # bound, never listening, then released: nothing answers
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_open_storage_fails_fast_on_an_unreachable_postgresql() -> None:
    url = f"postgresql://search:{SECRET}@127.0.0.1:{_closed_port()}/studies"
    text = _one_line_error(url)
    assert "cannot open postgresql://search:***@127.0.0.1:" in text


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (a hung server, or a
    firewall that swallows packets after the handshake)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not done.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        done.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


def test_a_server_that_never_answers_is_one_line_not_a_hang(silent_server: int) -> None:
    # The subprocess timeout is a hang guard (open_storage asks for a 5 s connect timeout).
    url = f"postgresql://search:{SECRET}@127.0.0.1:{silent_server}/studies"
    done = subprocess.run([sys.executable, "-m", "search", "status", "--storage", url],
                          capture_output=True, text=True, timeout=60, cwd=fm.ROOT)
    lines = fm.stderr_lines(done.stderr)
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: --storage: cannot open "), lines
    assert SECRET not in done.stderr + done.stdout


# --- open_storage: files -------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", ["sqlite:///", "journal://"])
def test_a_missing_directory_is_named_and_not_created(tmp_path: Path, scheme: str) -> None:
    target = tmp_path / "no" / "such" / "dir" / "x.db"
    text = _one_line_error(f"{scheme}{target}")
    assert "does not exist" in text and str(target.parent) in text
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("scheme", ["sqlite:///", "journal://"])
@pytest.mark.parametrize("must_exist", [False, True])
def test_a_directory_where_the_file_belongs_is_refused(tmp_path: Path, scheme: str,
                                                       must_exist: bool) -> None:
    folder = tmp_path / "studies.db"
    folder.mkdir()
    text = _one_line_error(f"{scheme}{folder}", must_exist=must_exist)
    assert "is a directory" in text
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("scheme", ["sqlite:///", "journal://"])
def test_must_exist_refuses_a_missing_file_and_does_not_create_it(tmp_path: Path,
                                                                  scheme: str) -> None:
    target = tmp_path / "missing.db"
    text = _one_line_error(f"{scheme}{target}", must_exist=True)
    assert "no such study file" in text and str(target) in text
    assert list(tmp_path.iterdir()) == []


def test_sqlite_storage_is_created_with_heartbeats_and_retries(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEARCH_HEARTBEAT_SECONDS", raising=False)
    monkeypatch.delenv("SEARCH_GRACE_SECONDS", raising=False)
    storage = open_storage(f"sqlite:///{tmp_path / 'x.db'}")
    assert (tmp_path / "x.db").is_file()
    assert storage.heartbeat_interval == search.tuning.storage.HEARTBEAT_SECONDS
    assert storage.grace_period == search.tuning.storage.GRACE_SECONDS
    callback = storage.get_heartbeat_stale_trial_callback()
    assert isinstance(callback, optuna.storages.RetryHeartbeatStaleTrialCallback)
    # Re-opening an existing file with must_exist works and sees the same (empty) storage.
    again = open_storage(f"sqlite:///{tmp_path / 'x.db'}", must_exist=True)
    assert optuna.get_all_study_summaries(again) == []


def test_open_storage_reads_the_heartbeat_constants_when_called(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Not bound as default arguments at import time: setting the constants takes effect.
    monkeypatch.delenv("SEARCH_HEARTBEAT_SECONDS", raising=False)
    monkeypatch.delenv("SEARCH_GRACE_SECONDS", raising=False)
    monkeypatch.setattr(search.tuning.storage, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(search.tuning.storage, "GRACE_SECONDS", 3)
    storage = open_storage(f"sqlite:///{tmp_path / 'x.db'}")
    assert (storage.heartbeat_interval, storage.grace_period) == (1, 3)


def test_the_environment_sets_heartbeat_and_grace(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCH_HEARTBEAT_SECONDS", "2")
    monkeypatch.setenv("SEARCH_GRACE_SECONDS", "7")
    storage = open_storage(f"sqlite:///{tmp_path / 'x.db'}")
    assert (storage.heartbeat_interval, storage.grace_period) == (2, 7)


@pytest.mark.parametrize("variable, value", [("SEARCH_HEARTBEAT_SECONDS", "ten"),
                                             ("SEARCH_GRACE_SECONDS", "1.5"),
                                             ("SEARCH_GRACE_SECONDS", "-3")])
def test_a_bad_heartbeat_setting_in_the_environment_is_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    # Fixed bug (storage.py, open_storage): `int(os.environ.get(...))` raises ValueError
    # for "ten" or "1.5" (a traceback from every command that opens a storage), and a
    # negative grace is passed on to Optuna. Parse the variable and raise a UserError
    # naming it and its value.
    monkeypatch.setenv(variable, value)
    with pytest.raises(UserError) as info:
        open_storage(f"sqlite:///{tmp_path / 'x.db'}")
    assert variable in str(info.value) and value in str(info.value)
    assert not (tmp_path / "x.db").exists()


def test_a_journal_file_round_trips_a_study(tmp_path: Path) -> None:
    url = f"journal://{tmp_path / 'x.journal'}"
    store = open_storage(url)
    assert isinstance(store, optuna.storages.JournalStorage)
    study = optuna.create_study(study_name="j", storage=store,
                                directions=["maximize", "minimize"])
    study.set_user_attr("recipe", {"name": "j", "epochs": 2})
    study.enqueue_trial({"x": 0.25})
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1.0 - t.suggest_float("x", 0, 1)),
                   n_trials=3)
    assert (tmp_path / "x.journal").is_file()

    reopened = optuna.load_study(study_name="j", storage=open_storage(url, must_exist=True))
    trials = reopened.get_trials()
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert trials[0].params == {"x": 0.25}
    assert [t.values for t in trials] == [t.values for t in study.get_trials()]
    assert reopened.user_attrs["recipe"] == {"name": "j", "epochs": 2}


def test_postgresql_storage_round_trips_a_study(postgres_url: str) -> None:
    store = open_storage(postgres_url)
    study = optuna.create_study(study_name="pg", storage=store)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    again = optuna.load_study(study_name="pg", storage=open_storage(postgres_url,
                                                                  must_exist=True))
    assert [t.state for t in again.get_trials()] == [TrialState.COMPLETE] * 2
