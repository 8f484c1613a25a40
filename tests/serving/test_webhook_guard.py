"""Webhooks are requests the server makes for a client: only to public addresses (or what
`webhook_allow` names), checked at submission and again after DNS at send time, to the
address that was checked, without following redirects or proxies from the environment."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from polychrome.serving.jobs import webhook
from polychrome.serving.jobs.webhook import WebhookRefused, post_webhook, resolve_webhook

JOB = {"id": "j1", "kind": "import", "state": "succeeded", "result": {"images": 1}}


@pytest.fixture
def sink():
    """A local receiver: records (path, Host header) of each request; /redirect answers 302."""
    seen: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server API
            self.rfile.read(int(self.headers.get("content-length", 0)))
            seen.append((self.path, self.headers.get("host")))
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{port}/elsewhere")
            else:
                self.send_response(204)
            self.end_headers()

        do_GET = do_POST  # noqa: N815

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield port, seen
    server.shutdown()


@pytest.fixture
def fake_dns(monkeypatch):
    """Names -> addresses, as the resolver would answer now (tests change them later)."""
    table: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kw):
        if host in table:
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6,
                     "", (a, port)) for a in table[host]]
        if host.endswith(".test"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, port, *args, **kw)

    monkeypatch.setattr(webhook.socket, "getaddrinfo", getaddrinfo)
    return table


@pytest.mark.parametrize("url", ["http://127.0.0.1/", "http://127.8.9.10:99/x", "http://[::1]/",
                                 "http://10.0.0.1/", "http://192.168.1.1/", "http://172.31.0.1/",
                                 "http://169.254.169.254/", "http://[fe80::1]/",
                                 "http://[fd00::1]/", "http://0.0.0.0/", "http://[::]/",
                                 "http://[::ffff:10.0.0.1]/", "http://100.64.1.1/",
                                 "http://224.0.0.251/", "http://255.255.255.255/",
                                 "http://localhost/"])
def test_non_public_addresses_are_refused(url):
    with pytest.raises(WebhookRefused, match="webhook_allow"):
        resolve_webhook(url)


@pytest.mark.parametrize("url, words", [("ftp://example.org/", "http"), ("http:///x", "host"),
                                        ("http://user:pw@example.org/", "password"),
                                        ("http://example.org:99999/", "malformed"),
                                        ("http://nowhere.test/", "does not resolve")])
def test_malformed_webhooks_are_refused(url, words, fake_dns):
    with pytest.raises(WebhookRefused, match=words):
        resolve_webhook(url)


def test_names_are_checked_by_what_they_resolve_to(fake_dns):
    fake_dns["hooks.test"] = ["93.184.216.34"]
    assert resolve_webhook("https://hooks.test/x") == ["93.184.216.34"]
    fake_dns["hooks.test"] = ["93.184.216.34", "10.0.0.7"]  # one private answer is enough
    with pytest.raises(WebhookRefused, match="10.0.0.7"):
        resolve_webhook("https://hooks.test/x")


def test_the_allow_list_names_hosts_and_networks(fake_dns):
    fake_dns["ci.internal.test"] = ["10.2.3.4"]
    assert resolve_webhook("http://127.0.0.1:8000/", "127.0.0.1") == ["127.0.0.1"]
    assert resolve_webhook("http://10.9.8.7/", " 10.0.0.0/8 , other") == ["10.9.8.7"]
    assert resolve_webhook("http://ci.internal.test/", "CI.internal.test") == ["10.2.3.4"]
    assert resolve_webhook("http://[fd00::5]/", "fd00::/8") == ["fd00::5"]
    with pytest.raises(WebhookRefused):
        resolve_webhook("http://10.9.8.7/", "192.168.0.0/16,ci.internal.test")
    with pytest.raises(WebhookRefused):  # a name allows that name, not its address
        resolve_webhook("http://10.2.3.4/", "ci.internal.test")


def test_send_time_dns_is_checked_again(sink, fake_dns, monkeypatch):
    port, seen = sink
    monkeypatch.setenv("POLYCHROME_WEBHOOK_ALLOW", "")
    fake_dns["rebind.test"] = ["93.184.216.34"]  # public when the job was submitted
    webhook.check_webhook(f"http://rebind.test:{port}/hook", "")
    fake_dns["rebind.test"] = ["127.0.0.1"]  # ... and loopback when the job ends
    status = post_webhook(f"http://rebind.test:{port}/hook", JOB)
    assert status.startswith("refused: ") and "127.0.0.1" in status
    assert seen == []


def test_the_post_goes_to_the_checked_address_with_the_original_host(sink, fake_dns,
                                                                    monkeypatch):
    port, seen = sink
    monkeypatch.setenv("POLYCHROME_WEBHOOK_ALLOW", "hooks.test")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # never used
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    fake_dns["hooks.test"] = ["127.0.0.1"]
    assert post_webhook(f"http://hooks.test:{port}/hook?a=1", JOB) == "http 204"
    assert seen == [("/hook?a=1", f"hooks.test:{port}")]


def test_redirects_are_not_followed(sink, monkeypatch):
    port, seen = sink
    monkeypatch.setenv("POLYCHROME_WEBHOOK_ALLOW", "127.0.0.1")
    assert post_webhook(f"http://127.0.0.1:{port}/redirect", JOB) == "http 302"
    assert [p for p, _ in seen] == ["/redirect"]


def test_the_body_names_no_server_path(sink, monkeypatch, polychrome_home):
    port, _ = sink
    monkeypatch.setenv("POLYCHROME_WEBHOOK_ALLOW", "127.0.0.1")
    got: list[bytes] = []
    real = webhook.httpx.Client.post

    def record(self, url, **kw):
        got.append(kw["content"])
        return real(self, url, **kw)

    monkeypatch.setattr(webhook.httpx.Client, "post", record)
    job = {**JOB, "error": {"code": "x", "message": f"cannot read {polychrome_home}/models/a"}}
    assert post_webhook(f"http://127.0.0.1:{port}/hook", job) == "http 204"
    assert str(polychrome_home).encode() not in got[0] and b"models/a" in got[0]


def test_a_job_whose_webhook_became_private_records_the_refusal(sink, monkeypatch,
                                                               polychrome_home):
    from polychrome.data.synthetic import make_shapes_dataset
    from polychrome.serving.jobs.worker import Worker

    from .test_worker import InProcessClient

    port, seen = sink
    monkeypatch.setenv("POLYCHROME_WORKER_POLL_S", "0.05")
    monkeypatch.setenv("POLYCHROME_WEBHOOK_ALLOW", "127.0.0.1")
    make_shapes_dataset(polychrome_home / "inbox" / "shapes", n=2, size=32, styles=("flat",))
    client = InProcessClient()
    r = client.post("/api/jobs", json={"kind": "import", "name": "shapes", "path": "shapes",
                                       "webhook": f"http://127.0.0.1:{port}/hook"})
    assert r.status_code == 202, r.text
    monkeypatch.setenv("POLYCHROME_WEBHOOK_ALLOW", "")  # the setting changed since
    assert Worker().run(max_jobs=1) == 1
    done = client.get(f"/api/jobs/{r.json()['id']}").json()
    assert done["state"] == "succeeded" and done["webhook_status"].startswith("refused: ")
    assert seen == []
    # refused at submission too, by a server started with the new setting
    r = InProcessClient().post("/api/jobs", json={"kind": "import", "name": "shapes", "path": "shapes",
                                       "webhook": f"http://127.0.0.1:{port}/hook"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_webhook"
