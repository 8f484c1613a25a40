"""The database: one SQLAlchemy engine per URL, transactions, migrations, cross-process locks.

`Settings.db_url` picks the engine: the embedded SQLite file `<home>/db.sqlite` (WAL) by
default, or PostgreSQL (`postgresql+psycopg://...`, the `scale` extra) when several machines
share one deployment. The tables live beside the store of their resource (datasets.py,
models.py, jobs.py, gallery.py); the schema is owned by the Alembic migrations in
`migrations/`, applied on the first use of a database by any process (a home made before
migrations existed is recognised and upgraded in place).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from ..errors import ConfigError, NotFound
from ..settings import get_settings

log = logging.getLogger(__name__)
# Alembic narrates every plugin and revision at INFO; our own log line says what matters.
logging.getLogger("alembic").setLevel(logging.WARNING)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001"  # the schema of release 0.1.0, made by create_all before migrations
_RELEASE_TABLES = frozenset({"dataset_versions", "dataset_images", "model_versions", "jobs",
                             "workers", "gallery_images"})


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable database URL>"


def normalise_url(url: str) -> str:
    """postgres:// and postgresql:// mean PostgreSQL through psycopg 3 (the `scale` extra)."""
    url = url.strip()
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _sqlite_file(url: str) -> Path | None:
    m = re.match(r"sqlite(\+\w+)?:///(.+)$", url)
    return Path(m.group(2)) if m and m.group(2) != ":memory:" else None


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"polychrome:{name}".encode()).digest()[:8], "big",
                          signed=True)


@contextmanager
def exclusive(name: str, engine: Engine | None = None) -> Iterator[None]:
    """A lock named `name` held by one process at a time, across every machine that shares
    the database: a PostgreSQL advisory lock, or a file lock beside the SQLite file."""
    engine = engine if engine is not None else get_engine()
    url = engine.url.render_as_string(hide_password=False)
    if is_sqlite(url):
        f = _sqlite_file(url)
        if f is None:
            yield
            return
        with _file_lock(f.with_name(f"{f.name}.{name}.lock")):
            yield
        return
    key = _lock_key(name)
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


def _alembic_config(conn: Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = conn
    return cfg


def schema_revision(conn: Connection) -> str | None:
    """The Alembic revision of the database on `conn` (None: no migrations applied)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def _known_revision(rev: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory(str(MIGRATIONS_DIR)).get_revision(rev) is not None
    except CommandError:
        return False


def migrate(engine: Engine) -> None:
    """Bring the database to the newest schema, once, whichever process gets there first."""
    from alembic import command

    with exclusive("migrate", engine), engine.begin() as conn:
        tables = set(inspect(conn).get_table_names())
        if "alembic_version" not in tables and _RELEASE_TABLES <= tables:
            # A home made by release 0.1.0 (create_all, no migrations): its schema is the
            # baseline, so record that and apply what came after.
            log.info("database %s: schema of release 0.1.0; upgrading", redact(str(engine.url)))
            command.stamp(_alembic_config(conn), BASELINE)
        current = schema_revision(conn)
        if current is not None and not _known_revision(current):
            raise ConfigError(f"the database {redact(str(engine.url))} has schema revision "
                              f"{current!r}, newer than this release knows: upgrade Polychrome")
        if current != head_revision():
            command.upgrade(_alembic_config(conn), "head")


@lru_cache(maxsize=8)
def _engine_for(url: str) -> Engine:
    if is_sqlite(url):
        f = _sqlite_file(url)
        if f is not None:
            f.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
    else:
        try:
            engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
        except ModuleNotFoundError as e:
            raise ConfigError(f"database_url {redact(url)} needs the {e.name!r} package: "
                              "pip install 'polychrome[scale]'") from None
        except ArgumentError as e:
            raise ConfigError(f"unusable database_url {redact(url)}: {e}") from None
    try:
        migrate(engine)
    except OperationalError as e:
        engine.dispose()
        reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e)
        raise ConfigError(f"cannot open the database {redact(url)}: {reason}") from None
    return engine


def dispose_engines() -> None:
    """Close every pooled connection of this process (tests, and before a fork)."""
    for url in list(_opened):
        _engine_for(url).dispose()
    _opened.clear()
    _engine_for.cache_clear()


_opened: set[str] = set()


def get_engine() -> Engine:
    settings = get_settings()
    settings.ensure_dirs()
    url = normalise_url(settings.db_url)
    engine = _engine_for(url)
    _opened.add(url)
    return engine


@contextmanager
def session_scope() -> Iterator[Session]:
    """A transaction: commit on success, roll back on any error."""
    factory = sessionmaker(bind=get_engine(), expire_on_commit=False)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# -- versioned names (datasets and models) -----------------------------------------------
def pick_version(rows: Sequence[Any], version: int | None, what: str) -> Any:
    """The row for `version` among `rows` (one name's rows, ascending `.version`), or the
    latest when `version` is None. `rows` must not be empty; NotFound names the versions."""
    if version is None:
        return rows[-1]
    for row in rows:
        if row.version == version:
            return row
    raise NotFound(f"{what} has no version {version}; versions: "
                   f"{', '.join(str(r.version) for r in rows)}")


def next_version(db_versions: Iterable[int | None], folder: Path) -> int:
    """One more than the highest version in the database or among `folder`'s numbered
    sub-directories (a directory left by an interrupted write still takes its number)."""
    on_disk = ([int(p.name) for p in folder.iterdir() if p.name.isascii() and p.name.isdigit()]
               if folder.is_dir() else [])
    return max([0, *(v for v in db_versions if v is not None), *on_disk]) + 1
