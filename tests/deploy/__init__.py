"""Deployment tests: the nginx configuration, the container files and the local cluster
(deploy/). Tests that need nginx, redis-server or PostgreSQL skip when one is missing,
unless POLYCHROME_REQUIRE_SERVICES=1 makes a missing program a failure."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
if str(DEPLOY) not in sys.path:
    sys.path.insert(0, str(DEPLOY))

import local_cluster  # noqa: E402


def require(missing: list[str]) -> None:
    """Skip (or, with POLYCHROME_REQUIRE_SERVICES=1, fail) when programs are missing."""
    if not missing:
        return
    why = "missing: " + "; ".join(missing)
    if os.environ.get("POLYCHROME_REQUIRE_SERVICES") == "1":
        pytest.fail(f"POLYCHROME_REQUIRE_SERVICES=1 but {why}")
    pytest.skip(why)


def require_nginx() -> None:
    import shutil

    require([] if shutil.which("nginx") else ["nginx: apt-get install nginx-light"])


__all__ = ["DEPLOY", "REPO", "local_cluster", "require", "require_nginx"]
