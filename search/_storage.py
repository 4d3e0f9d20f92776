"""Where studies live: one storage spec string -> an Optuna storage.

A spec is what ``--storage`` takes:

- nothing: ``$LORA_SEARCH_STORAGE``, else the SQLite file ``studies/lora-search.db``
  under the current folder (``studies/`` is created when a command writes);
- ``sqlite:///path.db``, or a plain path ending in ``.db``, ``.sqlite``, ``.sqlite3``;
- ``postgresql://user:password@host:5432/db`` (driven by psycopg 3);
- ``mysql://user:password@host:3306/db`` (MySQL or MariaDB, driven by PyMySQL);
- a plain path ending in ``.journal``: Optuna's journal file, for several processes on
  one host without a database server.

Relational storages record a heartbeat for each running trial, so the trial of a
worker that died without a word (SIGKILL, power loss, a lost host) is failed once its
heartbeat is stale and re-queued with the same parameters for another worker.

Opening never leaves anything behind on failure: a missing folder is an error rather
than created (only the default ``studies/`` folder is created, and only by commands
that write), and a new SQLite file that could not be set up is removed again.
Nor does it change a file that is not a storage: an existing ``.journal`` file must
begin with an Optuna record. An existing file that this process cannot write (or
whose folder it cannot write) is refused by commands that write, before any work,
and read by the others without a file made beside it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import StorageError
from .spaces import first_line

if TYPE_CHECKING:
    import optuna

ENV_VAR = "LORA_SEARCH_STORAGE"
DEFAULT_SQLITE_PATH = Path("studies") / "lora-search.db"
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
JOURNAL_SUFFIX = ".journal"

# A running trial writes a heartbeat every HEARTBEAT seconds; one silent for
# GRACE_HEARTBEATS heartbeats (10 s x 3 = 30 s by default) belongs to a dead worker.
# $LORA_SEARCH_HEARTBEAT overrides the interval (whole seconds), e.g. for tests.
HEARTBEAT_ENV_VAR = "LORA_SEARCH_HEARTBEAT"
DEFAULT_HEARTBEAT_SECONDS = 10
GRACE_HEARTBEATS = 3
# A trial whose worker died is re-queued at most this often: a config that kills its
# worker every time (e.g. the host's OOM killer) must not loop forever.
MAX_RETRIES = 2
# Seconds to wait for a database server to answer before calling it unreachable.
CONNECT_TIMEOUT_SECONDS = 10
# Seconds an SQLite writer waits for another process's write lock before giving up
# with "database is locked"; trials write rarely, so waits are short in practice.
SQLITE_LOCK_TIMEOUT_SECONDS = 60

_DRIVERS = {
    # scheme as typed -> (SQLAlchemy scheme, the PyPI package that provides the driver)
    "postgresql": ("postgresql+psycopg", "psycopg[binary]"),
    "postgres": ("postgresql+psycopg", "psycopg[binary]"),
    "postgresql+psycopg": ("postgresql+psycopg", "psycopg[binary]"),
    "postgresql+psycopg2": ("postgresql+psycopg2", "psycopg2-binary"),
    "mysql": ("mysql+pymysql", "PyMySQL"),
    "mysql+pymysql": ("mysql+pymysql", "PyMySQL"),
    "mysql+mysqldb": ("mysql+mysqldb", "mysqlclient"),
    "sqlite": ("sqlite", ""),
}

_FORMS = (
    "use sqlite:///PATH.db, postgresql://USER:PASSWORD@HOST:PORT/DB, "
    "mysql://USER:PASSWORD@HOST:PORT/DB, or a file path ending in .db (SQLite) or .journal (journal file)"
)


@dataclass(frozen=True)
class StorageSpec:
    """A storage spec resolved (no I/O): what kind, and the URL or file path."""

    kind: str  # "sqlite" | "postgresql" | "mysql" | "journal"
    text: str  # as the user gave it (or the default)
    url: str | None = None  # SQLAlchemy URL with the driver spelled out (relational kinds)
    path: Path | None = None  # the file (sqlite, journal)
    is_default: bool = False

    @property
    def label(self) -> str:
        return storage_label(self.text)

    @property
    def relational(self) -> bool:
        return self.kind != "journal"


def storage_label(spec: str | None) -> str:
    """The spec for display, with any password replaced by ***."""
    text = _spec_text(spec)
    return re.sub(r"^([A-Za-z0-9+.-]+://[^:/@?#]*:)[^/?#]*@", r"\1***@", text)


def _spec_text(spec: str | None) -> str:
    if spec:
        return spec
    return os.environ.get(ENV_VAR) or str(DEFAULT_SQLITE_PATH)


def resolve_storage_spec(spec: str | None) -> StorageSpec:
    """Parse a spec (None: $LORA_SEARCH_STORAGE or the default SQLite file)."""
    text = _spec_text(spec)
    is_default = not spec and not os.environ.get(ENV_VAR)
    label = storage_label(text)
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if match is None:
        path = Path(text).expanduser()
        if path.suffix == JOURNAL_SUFFIX:
            return StorageSpec("journal", text, path=path)
        if path.suffix in SQLITE_SUFFIXES:
            return StorageSpec("sqlite", text, url=_sqlite_url(path, label), path=path, is_default=is_default)
        raise StorageError(f"storage {label!r} is neither a URL nor a .db/.journal file path: {_FORMS}")
    scheme = match.group(1).lower()
    if scheme not in _DRIVERS:
        raise StorageError(f"unknown storage scheme {scheme!r} in {label!r}: {_FORMS}")
    if scheme == "sqlite":
        rest = text[len(match.group(0)):]
        if not rest.startswith("/") or rest == "/":
            raise StorageError(
                f"malformed SQLite URL {label!r}: write sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        path = Path(rest[1:]).expanduser()
        return StorageSpec("sqlite", text, url=_sqlite_url(path, label), path=path)
    driver_scheme = _DRIVERS[scheme][0]
    return StorageSpec(driver_scheme.split("+")[0], text, url=driver_scheme + text[len(scheme):])


def _sqlite_url(path: Path, label: str) -> str:
    """SQLAlchemy's URL of the SQLite file at ``path``. A '?', '#' or '%' in it would be read
    as a query, a fragment or an escape, and quoting does not help: SQLAlchemy 2.1 unquotes
    the path and 2.0 does not. Such a path is refused rather than another file opened."""
    odd = next((character for character in "?#%" if character in str(path)), None)
    if odd is not None:
        raise StorageError(f"SQLite path {str(path)!r} (storage {label!r}) has a {odd!r}, which a database URL cannot "
                           "carry: rename the file or folder, or use a .journal file")
    return f"sqlite:///{path}"


def heartbeat_seconds() -> int:
    """The heartbeat interval: $LORA_SEARCH_HEARTBEAT or the default."""
    value = os.environ.get(HEARTBEAT_ENV_VAR)
    if not value:
        return DEFAULT_HEARTBEAT_SECONDS
    try:
        seconds = int(value)
    except ValueError:
        seconds = 0
    if seconds < 1:
        raise StorageError(f"{HEARTBEAT_ENV_VAR}={value!r} is not a whole number of seconds >= 1")
    return seconds


def open_storage(spec: str | None = None, *, create: bool = True) -> "optuna.storages.BaseStorage":
    """Open the storage a spec names.

    ``create=False`` is for commands that only read: a SQLite or journal file that
    does not exist is then an error (pointing at ``lora-search run``) instead of a
    new empty file, and the default ``studies/`` folder is not created.
    Raises StorageError with a one-line message; nothing is left behind on failure.
    """
    resolved = resolve_storage_spec(spec)
    if resolved.kind == "journal":
        return _open_journal(resolved, create)
    if resolved.kind == "sqlite":
        return _open_sqlite(resolved, create)
    return _open_server(resolved)


def file_to_create(spec: str | None) -> Path | None:
    """The SQLite or journal file a spec names when it does not exist yet: what opening it
    for writing creates (see ``remove_if_unused``)."""
    resolved = resolve_storage_spec(spec)
    return resolved.path if resolved.path is not None and not resolved.path.exists() else None


def remove_if_unused(storage: "optuna.storages.BaseStorage", path: Path) -> None:
    """Remove ``path``, a storage file this process created (``file_to_create``), unless a
    study is in it by now (another process may have started one): a refused run leaves
    no empty file behind to be mistaken for a study."""
    import optuna

    try:
        if storage.get_all_studies():
            return
        if isinstance(storage, optuna.storages.RDBStorage):
            storage.engine.dispose()  # SQLite's write-ahead files go with the last connection
        for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            leftover.unlink(missing_ok=True)
    except Exception:  # on the way out of a refused run: its own error is the one to report
        return


def _check_file_location(resolved: StorageSpec, create: bool) -> bool:
    """Check the file's folder (creating the default one if allowed); True if the file exists."""
    assert resolved.path is not None
    path, label = resolved.path, resolved.label
    if path.exists():
        if path.is_dir():
            raise StorageError(f"storage {label!r} is a folder, not a file: name a file inside it")
        return True
    what = "journal file" if resolved.kind == "journal" else "SQLite file"
    if not create:
        raise StorageError(
            f"no {what} at {str(path)!r}: run 'lora-search run' to create a study there, "
            f"or point --storage (or ${ENV_VAR}) at an existing storage"
        )
    folder = path.parent
    if not folder.exists():
        if not resolved.is_default:
            raise StorageError(
                f"folder {str(folder)!r} for the {what} {str(path)!r} does not exist: create it or choose another path"
            )
        try:
            folder.mkdir(parents=True)
        except OSError as error:
            raise StorageError(f"cannot create the folder {str(folder)!r} for studies: {error.strerror}") from None
    if not folder.is_dir():
        raise StorageError(f"{str(folder)!r} is a file, not a folder: the {what} {str(path)!r} cannot be created")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StorageError(
            f"folder {str(folder)!r} is not writable: the {what} {str(path)!r} cannot be created there; "
            "choose another --storage"
        )
    return False


def _open_journal(resolved: StorageSpec, create: bool) -> "optuna.storages.BaseStorage":
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    assert resolved.path is not None
    existed = _check_file_location(resolved, create)
    if existed:
        _check_journal_head(resolved.path)
        if create:
            _check_writable(resolved, "Optuna makes FILE.lock beside it when it writes")
            _drop_unfinished_record(resolved.path)
    try:
        return JournalStorage(JournalFileBackend(str(resolved.path)))
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, AssertionError) as error:
        # Optuna replays every line at open, and fails deep inside on one it did not write:
        # not JSON (ValueError), not an object (TypeError), a missing field (KeyError), an
        # unknown op code (AssertionError "Should not reach."). A line appended later by
        # something else is left to Optuna's own errors.
        reason = type(error).__name__ + (f" {first_line(error)}" if str(error).strip() else "")
        raise StorageError(
            f"{str(resolved.path)!r} is not an Optuna journal file (a record Optuna cannot replay: {reason})"
        ) from None
    except OSError as error:
        _remove_new_file(resolved.path, existed)
        raise StorageError(f"cannot open the journal file {str(resolved.path)!r}: {error.strerror}") from None


def _drop_unfinished_record(path: Path) -> None:
    """Cut off a last line a write left unfinished, before this process appends to the journal.

    Optuna writes whole lines under its lock (FILE.lock), so under that lock a file that does
    not end in a newline holds the start of a record whose writer died (a full disk, a killed
    process). Readers skip such a line as one being written; but the next record appended
    would join it on one line, which no reader could parse again. The unfinished record was
    never read as one, so dropping it loses nothing that was stored.
    """
    from optuna.storages.journal import JournalFileSymlinkLock

    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        with open(path, "rb+") as file:
            size = file.seek(0, os.SEEK_END)
            if size == 0:
                return
            file.seek(size - 1)
            if file.read(1) == b"\n":
                return
            end = size
            while end > 0:  # back to the last newline, a block at a time
                start = max(0, end - 65536)
                file.seek(start)
                newline = file.read(end - start).rfind(b"\n")
                if newline >= 0:
                    end = start + newline + 1
                    break
                end = start
            file.truncate(end)
            file.flush()
            os.fsync(file.fileno())
    except OSError as error:
        raise StorageError(f"cannot repair the journal file {str(path)!r}: {error.strerror}") from None
    finally:
        lock.release()
    print(f"note: {str(path)!r} ended in an unfinished record ({size - end:,} bytes a write cut short left, a full "
          "disk or a killed process); it was dropped, nothing stored is lost", file=sys.stderr)


# The first line of a journal is read at most this far: a create-study record is short.
_JOURNAL_HEAD_LIMIT = 1 << 20


def _check_journal_head(path: Path) -> None:
    """Refuse an existing journal file whose first line is not a create-study record.

    Optuna's replay takes a last line that does not parse for a record still being
    written and skips it, so a file of one line of anything would read as an empty
    journal, and the next write would append to it. A journal starts with a complete
    create-study record (op code 0); an empty one has just been made.
    """
    try:
        with open(path, "rb") as file:
            head = file.readline(_JOURNAL_HEAD_LIMIT)
    except OSError as error:
        raise StorageError(f"cannot read the journal file {str(path)!r}: {error.strerror}") from None
    if not head:
        return
    if not head.endswith(b"\n") and len(head) < _JOURNAL_HEAD_LIMIT and head.lstrip().startswith(b"{"):
        return  # a first record being written by another process: Optuna skips it too
    try:
        record = json.loads(head)
    except ValueError:  # not JSON, or not UTF-8
        record = None
    if not (
        isinstance(record, dict)
        and type(record.get("op_code")) is int
        and record["op_code"] == 0
        and isinstance(record.get("study_name"), str)
        and isinstance(record.get("directions"), list)
    ):
        raise StorageError(
            f"{str(path)!r} is not an Optuna journal file (its first line is not the record of a created study)"
        )


def _open_sqlite(resolved: StorageSpec, create: bool) -> "optuna.storages.BaseStorage":
    assert resolved.path is not None
    existed = _check_file_location(resolved, create)
    read_only = False
    if existed and create:
        _check_writable(resolved, "SQLite makes FILE-wal, FILE-shm or FILE-journal beside it when it writes")
    elif existed and not _writable(resolved.path):
        resolved = _read_only_sqlite(resolved)
        read_only = True
    try:
        storage = _rdb_storage(resolved, {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT_SECONDS}})
    except StorageError:
        _remove_new_file(resolved.path, existed)
        raise
    if not read_only:
        _use_write_ahead_log(storage)
    return storage


def _writable(path: Path) -> bool:
    """Whether this process can write the file and make files in its folder.

    os.access, unlike a look at the mode bits, also answers for root, read-only mounts
    and files or folders made immutable (chattr +i): access(2) then says EPERM or EROFS.
    """
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)


def _check_writable(resolved: StorageSpec, beside: str) -> None:
    """For commands that write: the existing file and its folder must be writable, said
    before a model loads rather than as a failed commit after it."""
    assert resolved.path is not None
    path = resolved.path
    what = "journal file" if resolved.kind == "journal" else "SQLite file"
    if not os.access(path, os.W_OK):
        raise StorageError(
            f"the {what} {str(path)!r} is read-only: copy it somewhere writable and point --storage there, "
            "or choose another --storage"
        )
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise StorageError(
            f"the {what} {str(path)!r} is in a read-only folder ({beside}): "
            "copy it to a writable folder and point --storage there, or choose another --storage"
        )


def _read_only_sqlite(resolved: StorageSpec) -> StorageSpec:
    """The spec of a SQLite file opened only for reading, for a file or folder this process
    cannot write.

    The studies are kept in WAL mode (``_use_write_ahead_log``), and SQLite reads a WAL
    database through a FILE-shm index beside it, made on open: in a folder that is not
    writable that fails ("unable to open database file"). Without FILE-wal and FILE-shm
    there, no writer has the file open and every commit is in the file itself, so SQLite
    may take it as immutable and read it with no file beside it. With them there, a plain
    read-only open uses them: immutable would miss the commits still in FILE-wal.
    """
    assert resolved.path is not None
    path = resolved.path
    uri_options = "mode=ro"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        wal, shm = (path.with_name(path.name + suffix) for suffix in ("-wal", "-shm"))
        if not wal.exists() and not shm.exists():
            uri_options += "&immutable=1"
    # unquoted: the path has no '?', '#' or '%' (_sqlite_url)
    return dataclasses.replace(
        resolved, url=f"sqlite:///file:{path}?{uri_options}&uri=true"
    )


def _use_write_ahead_log(storage: "optuna.storages.RDBStorage") -> None:
    """WAL journal, synced at checkpoints: a trial makes about 70 small commits (each
    parameter and user attribute), 13 ms each in the default rollback mode here.

    WAL lives in the file, so one switch covers every later process; readers such as
    the dashboard no longer block writers. ``synchronous`` is per connection.
    """
    import sqlalchemy

    sqlalchemy.event.listen(storage.engine, "connect", _sqlite_synchronous_normal)
    try:
        with storage.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")
            _sqlite_synchronous_normal(connection.connection.dbapi_connection, None)
    except sqlalchemy.exc.OperationalError:
        pass  # a read-only file: reading works in any journal mode


def _sqlite_synchronous_normal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _remove_new_file(path: Path, existed: bool) -> None:
    """A file this open created (the backends create it first) goes when the open fails."""
    if not existed:
        path.unlink(missing_ok=True)


def _open_server(resolved: StorageSpec) -> "optuna.storages.BaseStorage":
    return _rdb_storage(resolved, {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_SECONDS}})


def _rdb_storage(resolved: StorageSpec, engine_kwargs: dict) -> "optuna.storages.BaseStorage":
    import warnings

    import optuna
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    assert resolved.url is not None
    label = resolved.label
    try:
        url = make_url(resolved.url)
        host = f"{url.host or 'localhost'}:{url.port or _default_port(resolved.kind)}"
    except (sqlalchemy.exc.ArgumentError, ValueError) as error:
        raise StorageError(f"malformed storage URL {label!r} ({error}): {_FORMS}") from None
    if resolved.kind != "sqlite" and not url.database:
        raise StorageError(f"storage URL {label!r} names no database: add /DATABASE after the host")
    heartbeat = heartbeat_seconds()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                resolved.url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat,
                grace_period=heartbeat * GRACE_HEARTBEATS,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES),
            )
    except ImportError:
        typed_scheme = resolved.text.split("://")[0].lower()
        raise StorageError(
            f"the database driver for {typed_scheme}:// storages is not installed: pip install {_DRIVERS[typed_scheme][1]}"
        ) from None
    except sqlalchemy.exc.DBAPIError as error:
        raise StorageError(_explain_database_error(error, resolved, host, url.database)) from None
    except sqlalchemy.exc.SQLAlchemyError as error:
        raise StorageError(f"cannot open storage {label!r}: {first_line(error)}") from None
    except RuntimeError as error:  # optuna: table schema of another optuna version
        raise StorageError(
            f"storage {label!r} was written by another Optuna version ({first_line(error)}); "
            f"run 'optuna storage upgrade --storage URL' after a backup"
        ) from None


def _default_port(kind: str) -> int:
    return {"postgresql": 5432, "mysql": 3306}.get(kind, 0)



def _explain_database_error(error: Exception, resolved: StorageSpec, host: str, database: str | None) -> str:
    label = resolved.label
    detail = str(getattr(error, "orig", None) or error)
    lowered = detail.lower()
    if resolved.kind == "sqlite":
        if "not a database" in lowered:
            return f"{str(resolved.path)!r} is not an SQLite database: choose another --storage"
        if "locked" in lowered:
            return f"SQLite file {str(resolved.path)!r} stayed locked by another process for {SQLITE_LOCK_TIMEOUT_SECONDS} s"
        if "?mode=ro" in (resolved.url or ""):  # opened read-only (_read_only_sqlite)
            assert resolved.path is not None
            if "readonly database" in lowered:  # Optuna's tables are missing and would have to be made
                return (
                    f"the SQLite file {str(resolved.path)!r} is read-only and holds no Optuna storage: "
                    "choose another --storage"
                )
            if "unable to open" in lowered:
                name = resolved.path.name
                return (
                    f"cannot read the SQLite file {str(resolved.path)!r}: its folder is not writable and SQLite's "
                    f"WAL mode needs {name}-shm beside it; copy {name} (with {name}-wal) to a writable folder "
                    "and point --storage there"
                )
        return f"cannot open the SQLite file {str(resolved.path)!r}: {first_line(error)}"
    server = "PostgreSQL" if resolved.kind == "postgresql" else "MySQL"
    if "password authentication failed" in lowered or "access denied" in lowered or "no password supplied" in lowered:
        return f"the {server} server at {host} refused the user name or password in {label!r}: check the credentials"
    if ("does not exist" in lowered and "database" in lowered) or "unknown database" in lowered:
        how = f"createdb {database}" if resolved.kind == "postgresql" else f"CREATE DATABASE {database}"
        return f"database {database!r} does not exist on the {server} server at {host}: create it first (e.g. {how})"
    if "failed to resolve host" in lowered or "name or service not known" in lowered:
        return f"host {host.rsplit(':', 1)[0]!r} in {label!r} cannot be resolved: check the host name"
    if "refused" in lowered or "timeout" in lowered or "timed out" in lowered or "can't connect" in lowered:
        return (
            f"cannot reach the {server} server at {host}: it is not running or not accepting "
            f"TCP connections ({'connection refused' if 'refused' in lowered else 'timed out'})"
        )
    return f"cannot open storage {label!r}: {first_line(error)}"
