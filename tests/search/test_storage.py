"""open_storage against real SQLite files, real journal files, a real PostgreSQL 15 and a real MariaDB."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.storages.journal import JournalStorage
from optuna.trial import TrialState

from lora_search._storage import (
    ENV_VAR,
    HEARTBEAT_ENV_VAR,
    MAX_RETRIES,
    open_storage,
    resolve_storage_spec,
    storage_label,
)
from lora_search._errors import StorageError
from lora_search.spaces import LoraSearchError

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv(HEARTBEAT_ENV_VAR, raising=False)


def _roundtrip(spec: str) -> None:
    """A study written through one storage object is read back through a second one."""
    study = optuna.create_study(study_name="s", storage=open_storage(spec))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
    again = optuna.load_study(study_name="s", storage=open_storage(spec, create=False))
    assert [t.state for t in again.trials] == [TrialState.COMPLETE] * 3
    assert [t.params for t in again.trials] == [t.params for t in study.trials]


def test_default_is_an_sqlite_file_under_studies(tmp_path):
    storage = open_storage(None)
    assert isinstance(storage, RDBStorage)
    assert (tmp_path / "studies" / "lora-search.db").is_file()
    _roundtrip(None)


def test_environment_variable_names_the_storage(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "from-env.journal")
    assert isinstance(open_storage(None), JournalStorage)
    assert (tmp_path / "from-env.journal").is_file()
    assert not (tmp_path / "studies").exists()


def test_read_only_open_creates_nothing(tmp_path):
    with pytest.raises(StorageError, match="lora-search run"):
        open_storage(None, create=False)
    with pytest.raises(StorageError, match="no journal file"):
        open_storage("missing.journal", create=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("spec", ["sqlite:///runs.db", "runs.db", "runs.sqlite3"])
def test_sqlite_spellings(spec):
    _roundtrip(spec)


def test_sqlite_absolute_url(tmp_path):
    _roundtrip(f"sqlite:///{tmp_path}/abs.db")
    assert (tmp_path / "abs.db").is_file()


@pytest.mark.parametrize("folder", ["a?b", "c#d", "e%20f"])
def test_an_sqlite_path_a_url_cannot_carry_is_refused(tmp_path, folder):
    """SQLAlchemy 2.1 unquotes a URL's path and 2.0 does not: either would open another
    file for some path, so none of these is opened."""
    (tmp_path / folder).mkdir()
    for spec in (f"{folder}/runs.db", f"sqlite:///{folder}/url.db"):
        with pytest.raises(StorageError, match=re.escape(f"has a '{folder[1]}', which a database URL cannot carry: rename")):
            open_storage(spec)
    assert [path.name for path in tmp_path.rglob("*")] == [folder]


def test_an_sqlite_path_with_spaces_opens_the_file_it_names_read_only_too(tmp_path):
    folder = tmp_path / "my studies"
    folder.mkdir()
    _study_in("my studies/runs.db")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["my studies"]
    with _read_only(folder):
        storage = open_storage("my studies/runs.db", create=False)
        assert len(optuna.load_study(study_name="s", storage=storage).trials) == 3
        storage.engine.dispose()


@pytest.mark.parametrize("spec", ["sqlite:///typo/runs.db", "typo/runs.db", "typo/runs.journal"])
def test_missing_folder_is_an_error_and_nothing_is_created(tmp_path, spec):
    with pytest.raises(StorageError, match="folder 'typo' .* does not exist"):
        open_storage(spec)
    assert list(tmp_path.iterdir()) == []


def test_default_folder_blocked_by_a_file(tmp_path):
    (tmp_path / "studies").write_text("not a folder")
    with pytest.raises(StorageError, match="'studies' is a file"):
        open_storage(None)


def test_a_file_that_is_not_a_database_is_left_alone(tmp_path):
    text = "my notes, not a database\n" * 200
    (tmp_path / "notes.db").write_text(text)
    with pytest.raises(StorageError, match="not an SQLite database"):
        open_storage("notes.db")
    assert (tmp_path / "notes.db").read_text() == text


def test_journal_file_shared_by_two_storage_objects():
    _roundtrip("studies.journal")


def _study_in(spec: str, trials: int = 3) -> None:
    """A study "s" with ``trials`` complete trials in the storage, its files closed after."""
    storage = open_storage(spec)
    optuna.create_study(study_name="s", storage=storage).optimize(
        lambda trial: trial.suggest_float("x", 0, 1), n_trials=trials
    )
    if isinstance(storage, RDBStorage):
        storage.engine.dispose()  # the last connection takes SQLite's -wal and -shm files with it


@contextlib.contextmanager
def _read_only(path: Path):
    """The file or folder cannot be written by this process until the block ends: chmod as
    a user; as root, whom chmod does not stop, the immutable flag (chattr +i)."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("running as root, where only chattr +i makes a file read-only, and it does not work here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


NOT_JOURNALS = ["single line of my notes\n", "my notes, no newline", '{"op_code": 4, "study_id": 0}\n', "[1, 2]\n"]


def test_a_one_line_file_that_is_not_a_journal_is_left_alone(tmp_path):
    """Optuna skips a last line that does not parse (a record being written), so one line
    of anything read as an empty journal, and a run appended its study to the file."""
    for text in NOT_JOURNALS:
        (tmp_path / "notes.journal").write_text(text)
        for create in (False, True):
            with pytest.raises(StorageError, match="'notes.journal' is not an Optuna journal file") as caught:
                open_storage("notes.journal", create=create)
            assert "\n" not in str(caught.value)
        assert (tmp_path / "notes.journal").read_text() == text
    # a first record that another process is writing right now is a journal still empty
    (tmp_path / "new.journal").write_text('{"op_code":0,"worker_id":"')
    assert open_storage("new.journal", create=False).get_all_studies() == []


def test_a_write_cut_short_is_dropped_before_the_next_write_appends(tmp_path, capsys):
    """A full disk (or a kill) mid-append leaves the journal ending in half a record. Readers
    skip it; the next write appended onto that line, and no reader could parse the file again."""
    _study_in("runs.journal")
    path = tmp_path / "runs.journal"
    whole = path.read_bytes()
    cut = b'{"op_code":8,"worker_id":"w","trial_id":2,"user_attr":{"exam'
    path.write_bytes(whole + cut)
    assert len(optuna.load_study(study_name="s", storage=open_storage("runs.journal", create=False)).trials) == 3
    assert path.read_bytes() == whole + cut  # reading leaves the file as it is

    study = optuna.load_study(study_name="s", storage=open_storage("runs.journal"))
    assert f"({len(cut):,} bytes a write cut short left" in capsys.readouterr().err
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    assert path.read_bytes().startswith(whole) and cut not in path.read_bytes()
    again = optuna.load_study(study_name="s", storage=open_storage("runs.journal", create=False))
    assert [t.state for t in again.trials] == [TrialState.COMPLETE] * 5


@pytest.mark.parametrize("line", ['{"op_code": 99}', "[1, 2]", "5", '"text"', "null"])
@pytest.mark.parametrize("last", [True, False], ids=["last-line", "inner-line"])
def test_a_journal_line_optuna_cannot_replay_is_one_line(tmp_path, line, last):
    _study_in("runs.journal")
    path = tmp_path / "runs.journal"
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    lines.insert(len(lines) if last else 2, line + "\n")
    path.write_text("".join(lines))
    for create in (False, True):
        with pytest.raises(StorageError, match=r"'runs.journal' is not an Optuna journal file \(a record Optuna cannot replay: ") as caught:
            open_storage("runs.journal", create=create)
        assert "\n" not in str(caught.value)
    assert path.read_text() == "".join(lines)


@pytest.mark.parametrize("spec", ["runs.db", "sqlite:///runs.db", "runs.journal"])
@pytest.mark.parametrize("blocked", ["file", "folder"])
def test_writing_to_a_read_only_storage_is_refused_up_front(tmp_path, spec, blocked):
    """Refused at open, before a run loads its model, not as a failed commit after it."""
    (tmp_path / "in").mkdir()
    spec = spec.replace("runs.", "in/runs.")
    _study_in(spec)
    file = tmp_path / "in" / ("runs.journal" if spec.endswith("journal") else "runs.db")
    before = file.read_bytes()
    with _read_only(file if blocked == "file" else file.parent):
        with pytest.raises(StorageError) as caught:
            open_storage(spec)
    message = str(caught.value)
    assert f"{str(Path('in') / file.name)!r} is " in message
    assert ("is read-only:" if blocked == "file" else "is in a read-only folder") in message
    assert "copy it" in message and "\n" not in message
    assert file.read_bytes() == before
    assert sorted(p.name for p in file.parent.iterdir()) == [file.name]


def test_read_only_commands_read_sqlite_in_a_read_only_folder(tmp_path):
    """The studies are in WAL mode, whose readers make FILE-shm beside the file: in a
    folder that is not writable the file is read as immutable, with nothing made there."""
    folder = tmp_path / "shared"
    folder.mkdir()
    _study_in("shared/runs.db")
    (folder / "empty.db").touch()
    before = (folder / "runs.db").read_bytes()
    with _read_only(folder):
        storage = open_storage("shared/runs.db", create=False)
        study = optuna.load_study(study_name="s", storage=storage)
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
        storage.engine.dispose()
        with pytest.raises(StorageError, match="'shared/empty.db' is read-only and holds no Optuna storage"):
            open_storage("shared/empty.db", create=False)
        assert sorted(p.name for p in folder.iterdir()) == ["empty.db", "runs.db"]
    assert (folder / "runs.db").read_bytes() == before
    # while a writer has the file open, the commits it has not checkpointed yet are in
    # FILE-wal: read with them, not from the file alone
    writer = open_storage("shared/runs.db")
    optuna.load_study(study_name="s", storage=writer).optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    assert (folder / "runs.db-wal").exists()
    with _read_only(folder):
        storage = open_storage("shared/runs.db", create=False)
        assert len(optuna.load_study(study_name="s", storage=storage).trials) == 5
        storage.engine.dispose()
    writer.engine.dispose()


DRIVERS = {"postgresql": "postgresql+psycopg://", "mysql": "mysql+pymysql://"}
SERVER_NAMES = {"postgresql": "PostgreSQL", "mysql": "MySQL"}
CREATE_HINTS = {"postgresql": "createdb no_such_db", "mysql": "CREATE DATABASE no_such_db"}


def test_database_url_opens_with_heartbeats(database_server, database_url):
    assert database_url.startswith(f"{database_server.scheme}://")
    storage = open_storage(database_url)
    assert isinstance(storage, RDBStorage)
    assert storage.url.startswith(DRIVERS[database_server.scheme])
    assert storage.get_heartbeat_interval() is not None
    _roundtrip(database_url)


def test_database_connection_refused(database_server):
    port = database_server.port + 1 if database_server.port < 65535 else 1
    with pytest.raises(StorageError) as caught:
        open_storage(f"{database_server.scheme}://{database_server.user}:pw@127.0.0.1:{port}/nothing")
    message = str(caught.value)
    assert f"{SERVER_NAMES[database_server.scheme]} server at 127.0.0.1:{port}" in message
    assert "not running" in message and "\n" not in message


def test_database_wrong_password_is_named_and_not_echoed(database_server):
    url = f"{database_server.scheme}://{database_server.user}:WRONG-secret@127.0.0.1:{database_server.port}/x"
    with pytest.raises(StorageError, match="refused the user name or password") as caught:
        open_storage(url)
    assert "WRONG-secret" not in str(caught.value)


def test_database_unknown_database_says_how_to_create_it(database_server):
    with pytest.raises(StorageError, match="database 'no_such_db' does not exist") as caught:
        open_storage(database_server.url("no_such_db"))
    assert CREATE_HINTS[database_server.scheme] in str(caught.value)


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ("redis://localhost/0", "unknown storage scheme 'redis'"),
        ("postgresql://u:p@host:notaport/db", "malformed storage URL"),
        ("postgresql://u:p@host:5432", "names no database"),
        ("sqlite://runs.db", "malformed SQLite URL"),
        ("studies/results", "neither a URL nor a .db/.journal file path"),
    ],
)
def test_bad_specs(spec, pattern, tmp_path):
    with pytest.raises(StorageError, match=pattern) as caught:
        open_storage(spec)
    assert isinstance(caught.value, LoraSearchError)
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("scheme", "module", "package"), [("mysql+mysqldb", "MySQLdb", "mysqlclient"),
                                                        ("postgresql+psycopg2", "psycopg2", "psycopg2-binary")])
def test_optional_driver_not_installed_names_the_package(scheme, module, package, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed, wherever it is
    with pytest.raises(StorageError, match=f"pip install {package}$"):
        open_storage(f"{scheme}://user:pw@127.0.0.1:3306/studies")


def test_spec_resolution_is_pure(tmp_path):
    assert resolve_storage_spec("postgres://u@h/db").url == "postgresql+psycopg://u@h/db"
    assert resolve_storage_spec("mysql://u@h/db").url == "mysql+pymysql://u@h/db"
    assert resolve_storage_spec("a/b.journal").kind == "journal"
    assert resolve_storage_spec(None).is_default
    assert list(tmp_path.iterdir()) == []


def test_label_masks_the_password():
    assert storage_label("postgresql://ann:s3cr3t@db:5432/studies") == "postgresql://ann:***@db:5432/studies"
    assert storage_label("mysql+pymysql://ann:p@ss@db/studies") == "mysql+pymysql://ann:***@db/studies"
    assert storage_label("postgresql://ann@db/studies") == "postgresql://ann@db/studies"
    assert storage_label("runs.journal") == "runs.journal"


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mysql"])
def test_stale_trial_is_failed_and_requeued(kind, monkeypatch, request):
    """A trial whose heartbeat stops (its worker died) is failed and re-queued, at most MAX_RETRIES times."""
    monkeypatch.setenv(HEARTBEAT_ENV_VAR, "1")  # grace period 3 s
    storage = open_storage({"sqlite": lambda: "hb.db", "postgresql": lambda: request.getfixturevalue("postgres_url"),
                            "mysql": lambda: request.getfixturevalue("mysql_url")}[kind]())
    study = optuna.create_study(study_name="hb", storage=storage)
    trial = study.ask()
    trial.suggest_int("r", 4, 64)
    storage.record_heartbeat(trial._trial_id)  # then silence, as after SIGKILL
    time.sleep(5)  # grace 3 s, + 1 s since SQLite's and MySQL's clocks may have whole seconds, + margin
    optuna.storages.fail_stale_trials(study)
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.WAITING]
    retry = study.get_trials()[1]
    assert retry.params == trial.params
    assert retry.system_attrs["failed_trial"] == trial.number
    assert MAX_RETRIES >= 1
