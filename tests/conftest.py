"""Shared fixtures: every test runs against its own temporary POLYCHROME_HOME."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

# Tests build their own tiny models; the shipped defaults are tested where asked for
# (set here too, so servers that module-scoped fixtures start inherit it).
os.environ["POLYCHROME_BUNDLED_MODELS"] = "0"

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


REQUIRE_SERVICES = os.environ.get("POLYCHROME_REQUIRE_SERVICES") == "1"


def need_service(what: str) -> None:
    """Skip when a service (PostgreSQL, Redis, nginx) is not on this machine; in CI
    (POLYCHROME_REQUIRE_SERVICES=1, set by .ci/run) a missing service is a failure."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is required here (POLYCHROME_REQUIRE_SERVICES=1)")
    pytest.skip(f"{what} is not available")


@pytest.fixture(autouse=True)
def polychrome_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("POLYCHROME_HOME", str(home))
    monkeypatch.setenv("POLYCHROME_BUNDLED_MODELS", "0")
    monkeypatch.delenv("POLYCHROME_DATABASE_URL", raising=False)
    # create_app points tempfile at the home's scratch space (process-wide): undo it.
    monkeypatch.setattr(tempfile, "tempdir", tempfile.tempdir)
    return home


# -- database tests run on SQLite and on PostgreSQL -------------------------------------------
# Tests marked `database` (modules set `pytestmark = pytest.mark.database`) run twice: on
# the embedded SQLite file and on a fresh PostgreSQL database made for the test on the
# server that POLYCHROME_TEST_POSTGRES_URL names (a role allowed to CREATE DATABASE).
def pytest_generate_tests(metafunc):
    if metafunc.definition.get_closest_marker("database") and \
            "db_backend" in metafunc.fixturenames:
        metafunc.parametrize("db_backend", ["sqlite", "postgresql"], indirect=True)


def load_local_cluster():
    """deploy/local_cluster.py, the one way this project starts PostgreSQL, Redis and nginx
    on loopback (the tests use it as `deploy/local-cluster` does)."""
    import importlib.util
    import sys
    from pathlib import Path

    if "local_cluster" in sys.modules:
        return sys.modules["local_cluster"]
    path = Path(__file__).resolve().parent.parent / "deploy" / "local_cluster.py"
    spec = importlib.util.spec_from_file_location("local_cluster", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["local_cluster"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """An admin URL of a PostgreSQL server: POLYCHROME_TEST_POSTGRES_URL, or a private
    server started for this test session from the machine's PostgreSQL binaries."""
    url = os.environ.get("POLYCHROME_TEST_POSTGRES_URL", "")
    if url:
        yield url
        return
    lc = load_local_cluster()
    if lc.find_pg_bin() is None:
        need_service("PostgreSQL (no server binaries; or set POLYCHROME_TEST_POSTGRES_URL)")
    services = lc.start_services(tmp_path_factory.mktemp("pg"), postgres=True, redis=False)
    try:
        yield services.database_url
    finally:
        lc.stop_services(services)


@pytest.fixture(autouse=True)
def db_backend(request, polychrome_home, monkeypatch):
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield backend
        _dispose_engines()
        return
    admin = request.getfixturevalue("postgres_server")
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from polychrome.persistence.db import normalise_url

    admin = normalise_url(admin)
    name = f"polychrome_test_{uuid.uuid4().hex[:12]}"
    server = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as e:  # noqa: BLE001 - an unreachable server
        server.dispose()
        need_service(f"PostgreSQL at {make_url(admin).render_as_string()} ({e})")
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    monkeypatch.setenv("POLYCHROME_DATABASE_URL", url)
    try:
        yield backend
    finally:
        _dispose_engines()
        with server.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


def _dispose_engines() -> None:
    import sys

    db = sys.modules.get("polychrome.persistence.db")
    if db is not None:
        db.dispose_engines()


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: tiny kernels on a busy 2-core machine run ~100x
    slower when OpenMP's second thread spins at barriers, and as fast on one when idle."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
