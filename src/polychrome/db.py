"""The SQLite index (SQLAlchemy 2, so PostgreSQL can replace it): all tables live here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    sessionmaker,
)

from .errors import NotFound
from .settings import get_settings


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class DatasetVersion(Base):
    """One immutable imported version of a named dataset."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(1024))  # relative to home
    source: Mapped[str] = mapped_column(String(1024))
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    n_images: Mapped[int] = mapped_column(Integer)
    domains: Mapped[dict] = mapped_column(JSON)  # {"style": count}
    rejected: Mapped[dict] = mapped_column(JSON)  # {"reason": count}

    images: Mapped[list[DatasetImage]] = relationship(
        back_populates="dataset", cascade="all, delete-orphan", passive_deletes=True
    )


class DatasetImage(Base):
    __tablename__ = "dataset_images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="CASCADE"), index=True
    )
    domain: Mapped[str] = mapped_column(String(128), index=True)
    file: Mapped[str] = mapped_column(String(1024))  # relative to the dataset version dir
    source_name: Mapped[str] = mapped_column(String(1024))  # name inside the source
    sha256: Mapped[str] = mapped_column(String(64), index=True)  # of the normalised pixels
    phash: Mapped[str] = mapped_column(String(16))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)

    dataset: Mapped[DatasetVersion] = relationship(back_populates="images")


class ModelVersion(Base):
    """A trained model directory registered under models/<name>/<version>/."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(Integer)
    arch: Mapped[str] = mapped_column(String(64))  # registry name, e.g. "dcgan"
    family: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(String(1024))  # relative to home (or absolute for bundled)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    styles: Mapped[list] = mapped_column(JSON, default=list)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    source_run: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    bundled: Mapped[int] = mapped_column(Integer, default=0)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)



class Job(Base):
    """A background job (import / train / eval): the single source of truth for its state.

    The queue (huey) only carries the job id; workers claim a job here with an
    atomic UPDATE and keep a lease alive with heartbeats (serving/jobs/).
    """

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4 hex
    kind: Mapped[str] = mapped_column(String(16), index=True)  # import | train | eval
    # queued | running | succeeded | failed | cancelled
    state: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    started: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    finished: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    updated: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    progress: Mapped[float] = mapped_column(Float, default=0.0)  # 0..1
    step: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    eta_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)  # last logged values
    error: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # {"code", "message"}
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    run_dir: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    cancel_requested: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires: Mapped[float | None] = mapped_column(Float, nullable=True)  # unix time
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # claims so far
    webhook: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    webhook_status: Mapped[str | None] = mapped_column(String(256), nullable=True)


class WorkerBeat(Base):
    """A job worker process and when it was last alive (for /api/ready and reclaiming)."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # host:pid:nonce
    host: Mapped[str] = mapped_column(String(256))
    pid: Mapped[int] = mapped_column(Integer)
    started: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_seen: Mapped[float] = mapped_column(Float)  # unix time
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)


class GalleryImage(Base):
    """A generated image kept in the gallery (file under gallery/)."""

    __tablename__ = "gallery_images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    model: Mapped[str] = mapped_column(String(128), index=True)
    model_version: Mapped[int] = mapped_column(Integer)
    style: Mapped[str | None] = mapped_column(String(128), index=True, nullable=True)
    seed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    truncation: Mapped[float | None] = mapped_column(Float, nullable=True)
    file: Mapped[str] = mapped_column(String(1024))  # relative to home
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    meta: Mapped[dict] = mapped_column(JSON, default=dict)  # the PNG text chunks

def _create_tables(engine: Engine, url: str) -> None:
    """create_all, serialised across processes: two processes opening a fresh
    database at once would otherwise race on CREATE TABLE."""
    lock_file = None
    if url.startswith("sqlite:///"):
        lock_file = open(url[len("sqlite:///"):] + ".lock", "a+")  # noqa: SIM115
        try:
            import fcntl

            fcntl.flock(lock_file, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - non-POSIX
            pass
    try:
        Base.metadata.create_all(engine)
    finally:
        if lock_file is not None:
            lock_file.close()  # closing releases the lock


@lru_cache(maxsize=8)
def _engine_for(url: str) -> Engine:
    engine = create_engine(url, future=True)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    _create_tables(engine, url)
    return engine


def get_engine() -> Engine:
    settings = get_settings()
    settings.ensure_dirs()
    return _engine_for(f"sqlite:///{settings.db_path}")


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
