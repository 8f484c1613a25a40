"""Property-based requests from /openapi.json against a real server: never a 5xx.

Every 4xx must carry the one error body {"error": {"code", "message"}}. The
server has a tiny registered model, so generation and model routes are reached
with valid names too. Examples per operation are few to keep the suite fast.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings

from .live import register_tiny, start_server

schemathesis = pytest.importorskip("schemathesis")  # a dev dependency

pytestmark = pytest.mark.slow
MAX_EXAMPLES = int(os.environ.get("POLYCHROME_SCHEMATHESIS_EXAMPLES", "12"))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    home = tmp_path_factory.mktemp("fuzz") / "home"
    home.mkdir()
    register_tiny(home, "dcgan", "m", ["ink", "paint"], resolution=16, width=8, z_dim=16,
                  num_domains=2)
    server = start_server(home, workers=0, env={"POLYCHROME_QUEUE_MAX": "100000",
                                                "POLYCHROME_GENERATE_MAX_N": "4"})
    yield server
    server.stop()


def test_no_server_errors(live):
    # schemathesis' own pytest plugin does not support this pytest; drive its per-operation
    # strategies with plain hypothesis instead.
    api = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in api.get_all_operations():
        op = result.ok()
        operations += 1

        @given(case=op.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call(base_url=live.url, timeout=60)
            where = f"{case.method} {case.formatted_path}"
            if where == "GET /api/ready" and response.status_code == 503:
                return  # documented: this server runs no worker, so it is not ready
            if response.status_code >= 500:
                failures.append(f"{where} -> {response.status_code}: {response.text[:300]}")
            elif 400 <= response.status_code < 500:
                body = response.json()
                if set(body) != {"error"} or not body["error"].get("code"):
                    failures.append(f"{where} -> {response.status_code} without the error "
                                    f"body: {response.text[:300]}")

        check()
    assert operations >= 15
    assert not failures, "\n".join(failures[:20])
    assert live.proc.poll() is None  # still up
