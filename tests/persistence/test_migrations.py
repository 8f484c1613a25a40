"""The schema belongs to the Alembic migrations: fresh databases, old homes, several processes."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import tarfile
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from polychrome.errors import ConfigError
from polychrome.persistence import db

FIXTURES = Path(__file__).parent / "fixtures"
RELEASE_HOME = FIXTURES / "home-0.1.0.tar.gz"  # made by release 0.1.0 (create_all, no Alembic)
TABLES = ("dataset_versions", "dataset_images", "model_versions", "jobs", "workers",
          "gallery_images")


def _import_all_tables() -> None:
    from polychrome.persistence import datasets, gallery, jobs, models  # noqa: F401


@pytest.mark.database
def test_migrations_build_exactly_the_tables_the_code_declares():
    """A fresh database at head matches the ORM tables (Alembic's own comparison), so no
    column the code reads is missing from the migrations, on SQLite and PostgreSQL."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    _import_all_tables()
    engine = db.get_engine()
    with engine.connect() as conn:
        assert db.schema_revision(conn) == db.head_revision()
        diff = compare_metadata(MigrationContext.configure(conn), db.Base.metadata)
    assert diff == []


def _rows(path: Path) -> dict[str, list[tuple]]:
    con = sqlite3.connect(path)
    try:
        return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                for t in TABLES}
    finally:
        con.close()


def test_a_release_home_upgrades_in_place_with_nothing_lost(tmp_path, monkeypatch):
    home = tmp_path / "home"
    with tarfile.open(RELEASE_HOME) as tar:
        tar.extractall(home, filter="data")
    # The release indexed bundled models by the absolute path of its installation.
    con = sqlite3.connect(home / "db.sqlite")
    con.execute("INSERT INTO model_versions (name, version, arch, family, path, created, "
                "styles, metrics, source_run, bundled, score) VALUES ('old-bundled', 1, "
                "'dcgan', 'noise', '/opt/old-site/polychrome/assets/models/old-bundled', "
                "'2026-11-01 10:00:00', '[]', '{}', 'bundled', 1, NULL)")
    con.commit()
    con.close()
    before = _rows(home / "db.sqlite")
    assert "alembic_version" not in sqlite3.connect(home / "db.sqlite").execute(
        "SELECT name FROM sqlite_master").fetchall()
    monkeypatch.setenv("POLYCHROME_HOME", str(home))

    engine = db.get_engine()  # opening the home upgrades it
    with engine.connect() as conn:
        assert db.schema_revision(conn) == db.head_revision()
    after = _rows(home / "db.sqlite")
    for table in TABLES:
        if table == "model_versions":
            continue
        if table == "jobs":  # 0003 added failures: 0 for every job that was there
            assert after[table] == [row + (0,) for row in before[table]], table
            continue
        assert after[table] == before[table], table
    old = {r[1]: r for r in before["model_versions"]}
    new = {r[1]: r for r in after["model_versions"]}
    assert new["mini-dcgan"] == old["mini-dcgan"]
    assert new["old-bundled"][5] == "bundled:old-bundled"  # installation-independent now
    assert {k: v for k, v in enumerate(new["old-bundled"]) if k != 5} == \
        {k: v for k, v in enumerate(old["old-bundled"]) if k != 5}

    # ... and everything in it still works through the stores.
    from polychrome.persistence.datasets import list_datasets, resolve_dataset
    from polychrome.persistence.gallery import image_path, list_images
    from polychrome.persistence.jobs import count_by_state, list_jobs
    from polychrome.persistence.models import load_model

    assert [d["name"] for d in list_datasets()] == ["mini"]
    assert (resolve_dataset("mini").path / "manifest.json").is_file()
    assert load_model("mini-dcgan").name == "dcgan"
    assert count_by_state()["succeeded"] == 1 and count_by_state()["queued"] == 1
    assert {j["kind"] for j in list_jobs()} == {"train", "import"}
    (img,) = list_images()["items"]
    assert image_path(img["id"]).is_file()
    # Opening it again is a no-op.
    db.dispose_engines()
    db.get_engine()
    assert _rows(home / "db.sqlite") == after


def _open_and_count(url: str, home: str, q) -> None:
    import os

    os.environ["POLYCHROME_HOME"] = home
    os.environ["POLYCHROME_DATABASE_URL"] = url
    from polychrome.persistence import db as pdb

    try:
        with pdb.get_engine().connect() as conn:
            q.put(pdb.schema_revision(conn))
    except Exception as e:  # noqa: BLE001 - reported to the parent
        q.put(f"error: {e}")


@pytest.mark.database
def test_processes_opening_a_fresh_database_at_once_migrate_it_once(polychrome_home):
    import os

    url = os.environ.get("POLYCHROME_DATABASE_URL") or f"sqlite:///{polychrome_home}/db.sqlite"
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_open_and_count, args=(url, str(polychrome_home), q))
             for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    revs = [q.get(timeout=5) for _ in procs]
    assert revs == [db.head_revision()] * 3
    with db.get_engine().connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
        assert set(TABLES) <= set(inspect(conn).get_table_names())


def test_an_unreachable_database_is_a_clear_error_without_the_password(monkeypatch):
    monkeypatch.setenv("POLYCHROME_DATABASE_URL",
                       "postgresql://someone:s3cret@127.0.0.1:1/polychrome")
    with pytest.raises(ConfigError) as err:
        db.get_engine()
    msg = str(err.value)
    assert "cannot open the database" in msg and "s3cret" not in msg and "***" in msg


def test_an_unknown_database_scheme_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("POLYCHROME_DATABASE_URL", "mongodb://127.0.0.1/polychrome")
    with pytest.raises(ConfigError, match="database_url"):
        db.get_engine()


def test_a_database_from_a_newer_release_is_refused(polychrome_home):
    engine = db.get_engine()
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    db.dispose_engines()
    with pytest.raises(ConfigError, match="newer"):
        db.get_engine()

