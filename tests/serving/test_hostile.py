"""Hostile requests against a real `polychrome serve`: each is a clear 4xx (or 408), never a
5xx, and the server (and the client's kept-alive connection) stays usable.

Huge mix weights, NUL / bidi / over-long names, webhooks to private addresses, foreign Host
headers and cross-site form posts, and clients that stop sending headers or a body.
"""

from __future__ import annotations

import io
import json
import select
import socket
import time
import zipfile

import httpx
import pytest

from .live import api_error, png_bytes, register_tiny, start_server

pytestmark = pytest.mark.slow

STYLES = ["ink", "neon", "pastel"]
STARGAN = dict(resolution=16, num_domains=3, width=8, max_width=16, style_dim=8, latent_dim=4,
               mapping_dim=16, mapping_shared_layers=1, mapping_head_layers=1, e_width=8,
               e_max_width=16, d_width=8, d_max_width=16)
DCGAN = dict(resolution=16, num_domains=3, width=8, z_dim=16)
HEADER_TIMEOUT = 1.5
BODY_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    home = tmp_path_factory.mktemp("hostile") / "home"
    home.mkdir()
    register_tiny(home, "dcgan", "dc", STYLES, **DCGAN)
    register_tiny(home, "stargan", "sg", STYLES, **STARGAN)
    (home / "inbox" / "shapes" / "ink").mkdir(parents=True)
    (home / "inbox" / "shapes" / "ink" / "a.png").write_bytes(png_bytes(32))
    server = start_server(home, workers=0, env={
        "POLYCHROME_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT),
        "POLYCHROME_BODY_TIMEOUT_S": str(BODY_TIMEOUT),
        "POLYCHROME_WEBHOOK_ALLOW": "",
        "POLYCHROME_ALLOWED_HOSTS": "",
        "POLYCHROME_ALLOWED_ORIGINS": "https://app.example.org"})
    yield server
    server.stop()


@pytest.fixture
def client(live):
    with live.client() as c:
        yield c


def _jobs(client) -> list[str]:
    return [j["id"] for j in client.get("/api/jobs").json()["items"]]


# -- 1. mix weights ----------------------------------------------------------------------------
def test_huge_finite_weights_blend_and_the_connection_stays_usable(client):
    from polychrome.imageio import read_png_metadata

    # One kept-alive connection for everything: a 500 used to reset it under the next request.
    r = client.post("/api/mix", json={"model": "dc", "weights": {"ink": 1e308, "neon": 1e308},
                                      "seed": 1, "save": False})
    assert r.status_code == 200, r.text
    assert json.loads(read_png_metadata(r.content)["recipe"])["weights"] == [0.5, 0.5]
    # the same picture as the plain half-and-half blend
    same = client.post("/api/mix", json={"model": "dc", "weights": {"ink": 1, "neon": 1},
                                         "seed": 1, "save": False})
    assert same.content == r.content
    tiny = client.post("/api/mix", json={"model": "dc", "weights": {"ink": 5e-324},
                                         "save": False})
    assert tiny.status_code == 200, tiny.text
    for weights, words in (('{"ink": 1e999}', "finite"), ('{"ink": -1e308}', ">= 0"),
                           ('{"ink": 0, "neon": 0}', "sum to 0")):
        # 1e999 is read as infinity by Python's JSON parser
        r = client.post("/api/mix", content=f'{{"model": "dc", "weights": {weights}}}',
                        headers={"Content-Type": "application/json"})
        api_error(r, 400, "bad_weight", words)
    # multipart reference weights and a live session's blend take the same path
    opened = client.post("/api/restyle/sessions", data={"model": "sg"},
                         files={"image": ("p.png", png_bytes(20, 3), "image/png")})
    assert opened.status_code == 201, opened.text
    sid = opened.json()["session"]
    r = client.post(f"/api/restyle/sessions/{sid}/render",
                    json={"weights": {"ink": 1e308, "pastel": 1.7e308}, "save": False})
    assert r.status_code == 200, r.text
    weights = json.loads(read_png_metadata(r.content)["recipe"])["weights"]
    assert weights == pytest.approx([1 / 2.7, 1.7 / 2.7])
    r = client.post("/api/mix", data={"model": "sg", "reference_weights": ["1e308", "1e308"]},
                    files=[("image", ("p.png", png_bytes(20, 3), "image/png")),
                           ("reference", ("r1.png", png_bytes(20, 4), "image/png")),
                           ("reference", ("r2.png", png_bytes(20, 5), "image/png"))])
    assert r.status_code == 200, r.text
    assert client.get("/api/health").status_code == 200


# -- 2. NUL and other hostile bytes in an inbox path ----------------------------------------------
@pytest.mark.parametrize("path", ["shapes\u0000/ink", "\u0000", "shapes/\u202eink",
                                  "x" * 300, "shapes/" + "y" * 256 + "/a.png"])
def test_hostile_inbox_paths_are_refused_before_a_job_exists(client, path):
    before = _jobs(client)
    r = client.post("/api/jobs", json={"kind": "import", "name": "x", "path": path})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "unsafe" and "import path" in err["message"]
    assert "\u0000" not in r.text and "\u202e" not in err["message"]
    assert _jobs(client) == before
    ok = client.post("/api/jobs", json={"kind": "import", "name": "x", "path": "shapes"})
    assert ok.status_code == 202, ok.text


# -- 3. hostile upload names ----------------------------------------------------------------------
@pytest.mark.parametrize("name, words", [
    ("ink/a\u202egnp.exe.png", "U+202E"),
    ("ink/a\u2066b.png", "U+2066"),
    ("ink/\u0085next.png", "U+0085"),
    ("ink/" + "a" * 300 + ".png", "255 bytes"),
])
def test_hostile_multipart_file_names_are_refused(client, name, words):
    before = _jobs(client)
    files = [("files", ("ink/fine.png", png_bytes(32, 1), "image/png")),
             ("files", (name, png_bytes(32, 2), "image/png"))]
    r = client.post("/api/datasets", data={"name": "names"}, files=files)
    api_error(r, 400, "unsafe", words)
    msg = r.json()["error"]["message"]
    assert "\u202e" not in msg and "\u2066" not in msg and len(msg) < 600
    assert _jobs(client) == before


def test_a_raw_nul_in_a_multipart_file_name_is_refused(client, live):
    # httpx would percent-encode the NUL: write the body by hand.
    boundary = "hostileboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nnul\r\n'.encode(),
        (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
         f'filename="ink/a\x00b.png"\r\nContent-Type: image/png\r\n\r\n').encode()
        + png_bytes(32) + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    before = _jobs(client)
    r = client.post("/api/datasets", content=b"".join(parts),
                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"]["code"] in ("unsafe", "bad_request")
    assert _jobs(client) == before


def test_an_archive_upload_name_is_shown_escaped_in_the_job(client):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("ink/a.png", png_bytes(32))
    r = client.post("/api/datasets", data={"name": "arch"},
                    files=[("files", ("x\u202egpj.zip", buf.getvalue(), "application/zip"))])
    assert r.status_code == 202, r.text
    assert "\u202e" not in r.json()["params"]["source"]
    assert r.json()["params"]["source"] == "upload:x\\u202egpj.zip"


# -- 4. webhooks ------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8765/hook", "http://localhost/hook", "http://[::1]/hook",
    "http://10.1.2.3/hook", "http://192.168.0.1/", "http://172.16.5.4/",
    "http://169.254.169.254/latest/meta-data/", "http://0.0.0.0/", "http://[fe80::1]/",
    "http://[::ffff:127.0.0.1]/", "http://224.0.0.1/", "http://100.64.0.1/",
])
def test_webhooks_to_private_addresses_are_refused_at_submission(client, url):
    before = _jobs(client)
    r = client.post("/api/jobs", json={"kind": "import", "name": "x", "path": "shapes",
                                       "webhook": url})
    api_error(r, 400, "bad_webhook", "webhook_allow")
    assert _jobs(client) == before


def test_a_webhook_to_a_public_address_is_accepted(client):
    r = client.post("/api/jobs", json={"kind": "import", "name": "x", "path": "shapes",
                                       "webhook": "https://93.184.216.34/hook"})
    assert r.status_code == 202, r.text


# -- 6. Host and Origin -------------------------------------------------------------------------------
def test_foreign_host_headers_are_refused(live, client):
    for host in ("evil.example", "evil.example:80", "attacker.test:" + live.url.rsplit(":", 1)[1]):
        r = client.get("/api/models", headers={"Host": host})
        api_error(r, 400, "bad_host", "allowed_hosts")
        r = client.post("/api/jobs", headers={"Host": host},
                        json={"kind": "import", "name": "x", "path": "shapes"})
        api_error(r, 400, "bad_host")
    port = live.url.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", "[::1]:1", "127.0.0.2"):
        assert client.get("/api/models", headers={"Host": host}).status_code == 200, host
    # a load balancer's liveness probe may use any name
    assert client.get("/api/health", headers={"Host": "lb.internal"}).status_code == 200


def test_cross_site_form_posts_are_refused(live, client):
    port = live.url.rsplit(":", 1)[1]
    files = [("files", ("ink/a.png", png_bytes(32, 7), "image/png"))]
    before = _jobs(client)
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"},
                    {"Origin": f"http://127.0.0.1:{int(port) + 1}"},
                    {"Origin": f"https://127.0.0.1:{port}"},
                    {"Referer": "https://evil.example/page.html"}):
        r = client.post("/api/datasets", data={"name": "csrf"}, files=files, headers=headers)
        api_error(r, 403, "cross_origin", "allowed_origins")
        r = client.request("DELETE", "/api/datasets/csrf", headers=headers)
        api_error(r, 403, "cross_origin")
    assert _jobs(client) == before
    # reading is not changing: a GET carries on
    assert client.get("/api/jobs", headers={"Origin": "https://evil.example"}).status_code == 200
    # the page's own origin, an allowed origin, and clients that send neither header
    for headers in ({"Origin": f"http://127.0.0.1:{port}"},
                    {"Referer": f"http://127.0.0.1:{port}/#/datasets"},
                    {"Origin": "https://app.example.org"}, {}):
        r = client.post("/api/datasets", data={"name": "csrf"}, files=files, headers=headers)
        assert r.status_code == 202, (headers, r.text)


# -- 7. slow clients ---------------------------------------------------------------------------------
def _raw(live, payload: bytes) -> socket.socket:
    host, port = live.url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    s.sendall(payload)
    return s


def _trickle(s: socket.socket, piece: bytes, every: float, for_s: float) -> None:
    """Send `piece` every `every` seconds for `for_s` seconds, until the server answers."""
    deadline = time.monotonic() + for_s
    while time.monotonic() < deadline:
        readable, _, _ = select.select([s], [], [], every)
        if readable:
            return
        try:
            s.sendall(piece)
        except OSError:
            return


def _read_all(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while True:
        try:
            data = s.recv(65536)
        except ConnectionResetError:  # it closed while we were still sending
            data = b""
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def _status_and_body(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_headers_that_never_finish_get_408_and_the_connection_closes(live):
    t0 = time.monotonic()
    with _raw(live, b"POST /api/mix HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty") as s:
        raw = _read_all(s)  # returns once the server closes
    waited = time.monotonic() - t0
    status, body = _status_and_body(raw)
    assert status == 408 and body["error"]["code"] == "request_timeout", raw
    assert HEADER_TIMEOUT * 0.8 <= waited < HEADER_TIMEOUT + 10
    # a connection that says nothing at all is closed too
    t0 = time.monotonic()
    with _raw(live, b"") as s:
        assert _read_all(s) == b""
    assert time.monotonic() - t0 < HEADER_TIMEOUT + 10
    # a trickle of header bytes does not extend the deadline
    t0 = time.monotonic()
    with _raw(live, b"GET /api/health HTTP/1.1\r\n") as s:
        _trickle(s, b"X-Slow: 1\r\n", 0.3, HEADER_TIMEOUT + 10)
        raw = _read_all(s)
    assert raw.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < HEADER_TIMEOUT + 10


def test_a_body_that_stops_arriving_gets_408(live):
    t0 = time.monotonic()
    head = (b"POST /api/mix HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{\"")
    with _raw(live, head) as s:
        raw = _read_all(s)
    waited = time.monotonic() - t0
    status, body = _status_and_body(raw)
    assert status == 408 and body["error"]["code"] == "request_timeout", raw
    assert "body_timeout_s" in body["error"]["message"]
    assert BODY_TIMEOUT * 0.8 <= waited < BODY_TIMEOUT + 10
    # The same on a route that answered before reading the body (here a 404): the rest of
    # the body is discarded, and a trickle of it no longer holds the connection forever.
    head = (b"POST /api/nope HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\nab")
    t0 = time.monotonic()
    with _raw(live, head) as s:
        s.settimeout(BODY_TIMEOUT + 10)
        raw = b""
        while b"\r\n\r\n" not in raw or len(raw.partition(b"\r\n\r\n")[2]) < int(
                raw.lower().partition(b"content-length: ")[2].split(b"\r\n")[0] or 0):
            raw += s.recv(65536)
        assert raw.startswith(b"HTTP/1.1 404")  # answered without reading the body
        t0 = time.monotonic()
        _trickle(s, b"x", 0.3, BODY_TIMEOUT + 10)  # returns when the server closes
        assert _read_all(s) == b""
    assert time.monotonic() - t0 < BODY_TIMEOUT + 5


def test_a_slow_but_steady_body_still_passes(live):
    body = json.dumps({"model": "dc", "weights": {"ink": 1}, "save": False,
                       "seed": 3}).encode()
    head = (b"POST /api/mix HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    with _raw(live, head) as s:
        pieces = [body[i:i + 8] for i in range(0, len(body), 8)]
        for piece in pieces:  # the whole body takes longer than the timeout
            time.sleep(BODY_TIMEOUT / 3)
            s.sendall(piece)
        raw = _read_all(s)
    assert len(pieces) * BODY_TIMEOUT / 3 > BODY_TIMEOUT
    assert raw.startswith(b"HTTP/1.1 200"), raw[:300]


def test_the_server_still_answers_after_all_that(client, live):
    assert client.get("/api/health").status_code == 200
    assert "Traceback" not in live.log()
    assert " 500 " not in live.log() and "Exception in ASGI application" not in live.log()


def test_the_python_client_and_a_keep_alive_connection_pass(live):
    with httpx.Client(base_url=live.url, timeout=30) as c:
        for _ in range(3):
            assert c.post("/api/mix", json={"model": "dc", "weights": {"ink": 1},
                                            "save": False}).status_code == 200
            time.sleep(0.2)
