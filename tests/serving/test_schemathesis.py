"""The API's contract, checked by schemathesis against a real server.

`test_contract` runs `schemathesis run --checks all` (every check: status codes, content
types, response schemas, headers, schema-valid requests accepted, invalid ones refused,
405 and Allow, links) for a bounded time against a server with a job worker, a tiny
translation model (trained on crops: it runs at the picture's own size), a noise model, a
super-resolution model and a dataset. The project's schemathesis.toml applies (its hooks
drop only the refusals no schema can state); the test adds where to find real names, so
generated requests reach the models: the live sessions chain (open a session, render,
render at full size, add a reference, close) through the schema's links, the gallery
routes through X-Polychrome-Image-Id, jobs through the worker.

The other tests pin what the contract is made of (documented answers, limits from
settings, 405 with the whole Allow) without schemathesis, in process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from .live import NATIVE_META, NATIVE_STARGAN, register_tiny, start_server, wait_job

REPO = Path(__file__).resolve().parents[2]
# Seconds schemathesis may run: fuzzing and the stateful chains repeat until they are spent
# (the whole test stays under four minutes on two cores).
SECONDS = int(os.environ.get("POLYCHROME_SCHEMATHESIS_SECONDS", "150"))
STYLES = ["ink", "neon", "pastel"]
P2P = dict(resolution=32, width=8, max_width=16, n_down=2, n_blocks=1, d_width=8)
# Small caps keep every request the schema allows cheap on two cores.
SERVER_ENV = {
    "POLYCHROME_QUEUE_MAX": "100000",
    "POLYCHROME_GENERATE_MAX_N": "4",
    "POLYCHROME_NATIVE_MAX_SIDE": "48",
    "POLYCHROME_TRAIN_MAX_STEPS": "4",
    "POLYCHROME_TRAIN_MAX_BATCH_SIZE": "8",
    "POLYCHROME_TRAIN_MAX_RESOLUTION": "16",
    "POLYCHROME_TRAIN_MAX_NPROC": "1",
    "POLYCHROME_MAX_MODEL_PARAMS": "200000",
}
# Where requests find real names: (dictionary, values) and, per operation, which body
# fields draw from which dictionary. (A drawn value also replaces a null: fields whose
# presence a one-of rule decides, like render's `style` beside `weights`, or `upscaler`
# without `upscale`, are left to the generator.)
DICTIONARIES = {
    "translators": ["st"],
    "generators": ["dc"],
    "restorers": ["sr"],
    "styles": STYLES,
    "datasets": ["shapes"],
    "inbox": ["shapes"],
}
OPERATIONS = [
    (["/api/restyle", "/api/mix", "/api/interpolate", "/api/restyle/sessions"],
     {"model": "translators", "style": "styles", "reference_style": "styles",
      "from": "styles", "to": "styles"}),
    (["/api/generate"], {"model": "generators", "style": "styles"}),
    (["/api/restore"], {"model": "restorers"}),
    (["/api/restyle/sessions/{session_id}/render", "/api/restyle/sessions/{session_id}/full"],
     {"reference_style": "styles"}),
    (["/api/jobs", "/api/presets/estimate"], {"dataset": "datasets", "path": "inbox"}),
]


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def contract_config(out: Path) -> Path:
    """The project's schemathesis.toml, plus the dictionaries of real names."""
    lines = [(REPO / "schemathesis.toml").read_text(), ""]
    for name, values in DICTIONARIES.items():
        lines += [f"[dictionaries.{name}]", f"values = {_toml_list(values)}", ""]
    for paths, fields in OPERATIONS:
        lines += ["[[operations]]", f"include-path = {_toml_list(paths)}",
                  "parameters = { " + ", ".join(
                      f'"body.{field}" = {{ dictionary = "{dictionary}", probability = 0.8 }}'
                      for field, dictionary in fields.items()) + " }", ""]
    out.write_text("\n".join(lines))
    return out


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from polychrome.data.synthetic import make_shapes_dataset

    home = tmp_path_factory.mktemp("contract") / "home"
    home.mkdir()
    register_tiny(home, "stargan", "st", STYLES, meta=NATIVE_META, **NATIVE_STARGAN)
    register_tiny(home, "dcgan", "dc", STYLES, resolution=16, width=8, z_dim=16, num_domains=3)
    register_tiny(home, "pix2pix", "sr", [], task="sr", scales=[2], **P2P)
    make_shapes_dataset(home / "inbox" / "shapes", n=4, size=32)
    server = start_server(home, workers=1, env=SERVER_ENV)
    try:
        with server.client() as c:  # a dataset for train jobs, imported by the worker
            r = c.post("/api/jobs", json={"kind": "import", "name": "shapes", "path": "shapes"})
            assert r.status_code == 202, r.text
            assert wait_job(c, r.json()["id"], timeout=120)["state"] == "succeeded"
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_contract(live, tmp_path):
    config = contract_config(tmp_path / "schemathesis.toml")
    report = tmp_path / "report"
    run = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(config), "run",
         f"{live.url}/openapi.json", "--checks", "all", "--max-time", str(SECONDS),
         "--workers", "1", "--request-timeout", "200", "--seed", "1",
         "--report", "json", "--report-dir", str(report)],
        cwd=REPO, capture_output=True, text=True, timeout=SECONDS + 300,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    summary = json.loads(next(report.glob("json-*.json")).read_text())
    found = run.stdout[run.stdout.find("= FAILURES ="):][:20000]
    assert summary["test_cases"]["unique_failures"] == 0 and not summary["errors"], found
    assert run.returncode == 0, run.stdout[-6000:]
    assert summary["operations"]["tested"] == summary["operations"]["total"]
    assert live.proc.poll() is None  # the server is still up

    # Generated requests reached the models and the worker, not only the 404s of names
    # that do not exist: the server's own request counts, by route and status.
    with live.client() as c:
        taken = _answered(c.get("/metrics").text)
        jobs = c.get("/api/jobs", params={"limit": 500}).json()["items"]
    for method, route in [("POST", "/api/restyle"), ("POST", "/api/generate"),
                          ("POST", "/api/restore"), ("POST", "/api/restyle/sessions"),
                          # a session opened, then used through the schema's links
                          ("POST", "/{session_id}/render"),
                          ("POST", "/{session_id}/references"),
                          ("GET", "/api/images/{image_id}")]:
        assert any(m == method and r.endswith(route) for m, r in taken), (method, route,
                                                                          sorted(taken))
    assert any(j["state"] == "succeeded" and j["attempts"] > 0 for j in jobs)  # the worker


def _answered(metrics: str) -> set[tuple[str, str]]:
    """(method, route) pairs the server answered with a 2xx, from its /metrics."""
    import re

    out = set()
    for m in re.finditer(r'^polychrome_http_requests_total\{method="([A-Z]+)",'
                         r'route="([^"]+)",status="2\d\d"\} ([0-9.e+]+)$', metrics, re.M):
        if float(m.group(3)) > 0:
            out.add((m.group(1), m.group(2).replace(":int}", "}")))
    return out


# -- what the contract is made of, checked in process --------------------------------------
@pytest.fixture(scope="module")
def app_client(tmp_path_factory):
    import tempfile

    from polychrome.serving.app import create_app
    from polychrome.settings import Settings

    spool = tempfile.tempdir  # create_app points it at the home's scratch space
    home = tmp_path_factory.mktemp("inproc") / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POLYCHROME_HOME", str(home))
        register_tiny(home, "stargan", "st", STYLES, meta=NATIVE_META, **NATIVE_STARGAN)
        register_tiny(home, "dcgan", "dc", STYLES, resolution=16, width=8, z_dim=16,
                      num_domains=3)
        settings = Settings(generate_max_n=7, train_max_nproc=3, native_max_side=640,
                            train_max_steps=50)
        with TestClient(create_app(settings), raise_server_exceptions=False) as c:
            c.home = home
            yield c
    tempfile.tempdir = spool


@pytest.fixture(scope="module")
def doc(app_client) -> dict:
    return app_client.get("/openapi.json").json()


def _operations(doc: dict):
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            yield path, method, op


def test_every_named_resource_documents_404_with_the_error_body(doc):
    for path, method, op in _operations(doc):
        if "{" in path:
            assert "404" in op["responses"], (method, path)
        for status, response in op["responses"].items():
            if status[0] in "45" and not (path == "/api/ready" and status == "503"):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path)
    body_refs = [("post", p) for p in ("/api/jobs", "/api/generate", "/api/restyle",
                                       "/api/mix", "/api/interpolate", "/api/restore",
                                       "/api/restyle/sessions", "/api/presets/estimate")]
    for method, path in body_refs:
        assert "404" in doc["paths"][path][method]["responses"], path


def test_guards_answers_are_documented(doc):
    for path, method, op in _operations(doc):
        codes = set(op["responses"])
        assert {"400", "413"} <= codes, (method, path)
        if path != "/api/health":
            assert {"401", "429"} <= codes, (method, path)
        if method in ("post", "put", "patch", "delete"):
            assert "403" in codes, (method, path)
        if "requestBody" in op:
            assert "408" in codes, (method, path)
    for path in ("/api/generate", "/api/restyle", "/api/restyle/sessions/{session_id}/render"):
        responses = doc["paths"][path]["post"]["responses"]
        assert {"503", "504"} <= set(responses), path
        assert "Retry-After" in responses["503"]["headers"]


def test_limits_come_from_settings(doc):
    schemas = doc["components"]["schemas"]
    assert schemas["GenerateIn"]["properties"]["n"]["maximum"] == 7
    assert schemas["TrainJobIn"]["properties"]["nproc"]["maximum"] == 3
    for name in ("TrainJobIn", "EstimateIn"):
        steps = schemas[name]["properties"]["steps"]["anyOf"][0]
        assert steps["maximum"] == 50, name
    assert "dcgan" in schemas["TrainJobIn"]["properties"]["model"]["enum"]
    assert "steps" in schemas["TrainJobIn"]["properties"]["config"]["propertyNames"]["enum"]
    restyle = doc["paths"]["/api/restyle"]["post"]["requestBody"]["content"][
        "multipart/form-data"]["schema"]
    assert restyle["properties"]["variations"]["maximum"] == 7
    size = [v for v in restyle["properties"]["size"]["anyOf"] if v.get("type") == "integer"]
    assert size[0]["maximum"] == 640
    presets = doc["paths"]["/api/presets"]["get"]["parameters"][0]["schema"]
    assert "dcgan" in presets["enum"]


def test_names_and_one_of_rules_are_in_the_schema(doc):
    import re

    schemas = doc["components"]["schemas"]
    ref = schemas["GenerateIn"]["properties"]["model"]["pattern"]
    assert re.search(ref, "emoji-stargan:3") and not re.search(ref, "a/b")
    assert not re.search(ref, "name\n")  # Python's `$` alone would take a final newline
    show = doc["paths"]["/api/models/{name}"]["get"]["parameters"][0]["schema"]
    assert show["pattern"] == ref
    assert "oneOf" in schemas["RenderIn"]  # style or weights
    form = doc["paths"]["/api/restyle"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert "image" in form["schema"]["required"]
    assert "PNG" in form["schema"]["properties"]["image"]["description"]
    assert "null" not in json.dumps(form["schema"]["properties"])  # forms have no nulls
    links = doc["paths"]["/api/restyle/sessions"]["post"]["responses"]["201"]["links"]
    assert any(link["parameters"] == {"session_id": "$response.body#/session"}
               and "render" in op_id for op_id, link in links.items())


@pytest.mark.parametrize("method, path, allow", [
    ("PUT", "/api/jobs", "GET, POST"),
    ("OPTIONS", "/api/jobs", "GET, POST"),
    ("OPTIONS", "/api/datasets/shapes", "GET, DELETE"),
    ("PATCH", "/api/images/5", "GET, DELETE"),
    ("DELETE", "/api/images/5.png", "GET"),  # not image '5.png' of DELETE /api/images/{id}
    ("OPTIONS", "/api/restyle/sessions/abc", "GET, DELETE"),
])
def test_undeclared_methods_answer_405_with_the_whole_allow(app_client, method, path, allow):
    r = app_client.request(method, path)
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == allow
    assert r.json()["error"]["code"] == "method_not_allowed"


def test_declared_methods_and_unknown_paths_are_unchanged(app_client):
    assert app_client.get("/api/jobs").status_code == 200
    assert app_client.get("/api/images/5").status_code == 404
    assert app_client.get("/api/nope").status_code == 404


# -- what schemathesis found behind the schema, pinned ---------------------------------------
@pytest.fixture
def inproc(app_client, monkeypatch):
    """The in-process app, with the home that holds its models (each test has its own)."""
    monkeypatch.setenv("POLYCHROME_HOME", str(app_client.home))
    return app_client


def _png(size: int = 8) -> bytes:
    from .live import png_bytes

    return png_bytes(size)


def test_an_import_path_not_in_the_inbox_is_404(inproc):
    r = inproc.post("/api/jobs", json={"kind": "import", "name": "a", "path": "nothing"})
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "bad_source"


def test_only_noise_models_have_a_sample_grid(inproc):
    assert inproc.get("/api/models/dc/samples.png").status_code == 200
    r = inproc.get("/api/models/st/samples.png")
    assert r.status_code == 404 and r.json()["error"]["code"] == "wrong_family", r.text


def test_a_tiny_fps_is_refused_not_a_server_error(inproc):
    r = inproc.post("/api/interpolate", data={"model": "st", "from": "ink", "to": "neon",
                                              "frames": "2", "fps": "5e-324"},
                    files={"image": ("a.png", _png())})
    assert r.status_code == 422, r.text
    r = inproc.post("/api/interpolate", json={"model": "dc", "from": "ink", "to": "ink",
                                              "fps": 0.01})
    assert r.status_code == 422, r.text
    # the slowest allowed, every frame the same (a GIF merges them into one long frame)
    r = inproc.post("/api/interpolate", json={"model": "dc", "from": "ink", "to": "ink",
                                              "frames": 64, "pingpong": True, "fps": 0.25})
    assert r.status_code == 200, r.text


def test_refusals_that_depend_on_the_model_say_so(inproc):
    # a noise model takes no picture to restyle: its family, not a malformed request
    r = inproc.post("/api/mix", data={"model": "dc", "weights": '{"ink": 1}'},
                    files={"image": ("a.png", _png())})
    assert r.status_code == 400 and r.json()["error"]["code"] == "wrong_family", r.text


def test_reference_weights_may_be_one_json_list(inproc):
    files = [("image", ("a.png", _png())), ("reference", ("r1.png", _png(8))),
             ("reference", ("r2.png", _png(12)))]
    r = inproc.post("/api/mix", data={"model": "st", "reference_weights": "[1, 3]",
                                      "save": "false"}, files=files)
    assert r.status_code == 200, r.text
