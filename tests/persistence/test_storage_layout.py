"""Shared storage vs per-machine state: what several machines mount and what each keeps."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
from PIL import Image

from polychrome.settings import get_settings

pytestmark = pytest.mark.database  # on SQLite and on PostgreSQL


def _images(root, styles=("ink", "neon"), n=3):
    for k, style in enumerate(styles):
        (root / style).mkdir(parents=True)
        for i in range(n):
            rng = np.random.default_rng(10 * k + i)
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(
                root / style / f"p{i}.png")
    return root


def _machine(monkeypatch, home, storage, db_url):
    from polychrome.persistence import db

    db.dispose_engines()
    monkeypatch.setenv("POLYCHROME_HOME", str(home))
    monkeypatch.setenv("POLYCHROME_STORAGE_ROOT", str(storage))
    monkeypatch.setenv("POLYCHROME_DATABASE_URL", db_url)


def test_two_machines_share_storage_and_database_but_not_caches(tmp_path, monkeypatch):
    from polychrome.data.cache import cache_paths, load_packed
    from polychrome.models.registry import create_model
    from polychrome.persistence.datasets import import_dataset, resolve_dataset
    from polychrome.persistence.models import add_model_version, load_model, resolve_model

    storage = tmp_path / "shared"
    storage.mkdir()
    db_url = os.environ.get("POLYCHROME_DATABASE_URL") or f"sqlite:///{storage}/db.sqlite"
    # Machine A mounts the storage at one path ...
    _machine(monkeypatch, tmp_path / "home-a", storage, db_url)
    import_dataset(_images(tmp_path / "src"), "shared-set", min_size=16)
    model_dir = tmp_path / "m"
    create_model("dcgan", resolution=16, z_dim=8, width=8).save_pretrained(model_dir)
    add_model_version(model_dir, "shared-model")
    ref = resolve_dataset("shared-set")
    assert ref.path.is_relative_to(storage / "datasets")
    load_packed("shared-set", 16)
    assert cache_paths(ref.path, 16, "crop")[0].is_relative_to(tmp_path / "home-a" / "cache")
    assert not (ref.path / "cache").exists()  # the shared copy holds no machine's cache
    assert resolve_model("shared-model").path.is_relative_to(storage / "models")

    # ... machine B mounts it somewhere else: rows hold storage-relative paths.
    elsewhere = tmp_path / "mnt"
    elsewhere.symlink_to(storage)
    _machine(monkeypatch, tmp_path / "home-b", elsewhere, db_url)
    ref_b = resolve_dataset("shared-set")
    assert ref_b.path == elsewhere / "datasets" / "shared-set" / "1"
    packed = load_packed("shared-set", 16)
    assert packed.domain_counts() == {"ink": 3, "neon": 3}
    assert cache_paths(ref_b.path, 16, "crop")[0].is_relative_to(tmp_path / "home-b" / "cache")
    assert resolve_model("shared-model").path == elsewhere / "models" / "shared-model" / "1"
    assert load_model("shared-model").name == "dcgan"
    assert get_settings().tmp_dir == elsewhere / "tmp"


def test_request_bodies_spool_inside_the_storage_root(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from polychrome.serving.app import create_app

    monkeypatch.setenv("POLYCHROME_STORAGE_ROOT", str(tmp_path / "shared"))
    app = create_app()
    assert tempfile.gettempdir() == str(tmp_path / "shared" / "tmp")
    spooled: list[str] = []
    real = tempfile.SpooledTemporaryFile

    class Recording(real):  # what Starlette's multipart parser creates for each upload
        def rollover(self):
            super().rollover()
            # An unnamed temporary file: where it lives is what its descriptor points at.
            spooled.append(os.readlink(f"/proc/self/fd/{self._file.fileno()}"))

    import starlette.formparsers

    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", Recording)
    big = b"x" * (2 * 1024 * 1024)
    with TestClient(app) as client:
        r = client.post("/api/restyle", data={"model": "nope"}, files={"image": ("a.png", big)})
    assert r.status_code in (400, 404, 422)
    assert spooled and all(str(p).startswith(str(tmp_path / "shared" / "tmp")) for p in spooled)
