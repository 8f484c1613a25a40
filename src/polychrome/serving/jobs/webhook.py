"""Tell a caller's URL that its job ended: one JSON POST, short timeout, never fatal.

A webhook is a request the server makes on a client's behalf, so it may only reach public
addresses: loopback, private, link-local, multicast and reserved ones are refused (the
hosts and networks in the `webhook_allow` setting excepted), when the job is submitted
and again when the POST is sent, after resolving the name then (DNS can change in
between). The POST goes to the address that was checked, never follows a redirect and
ignores proxy settings from the environment.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from ...errors import PolychromeError

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class WebhookRefused(PolychromeError):
    code = "bad_webhook"
    http_status = 400


def summary(job: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "kind", "state", "progress", "step", "total", "error", "result", "run_dir",
            "created", "started", "finished", "metrics")
    return {k: job.get(k) for k in keys}


def parse_allow(text: str) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    """The `webhook_allow` setting: comma-separated host names and IP addresses / CIDRs."""
    names: set[str] = set()
    nets: list[IPNetwork] = []
    for entry in (e.strip() for e in (text or "").split(",")):
        if not entry:
            continue
        try:
            nets.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            names.add(entry.lower().rstrip("."))
    return frozenset(names), tuple(nets)


def _plain(ip: IPAddress) -> IPAddress:
    """An IPv4 address written as IPv6 (::ffff:a.b.c.d) is that IPv4 address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_public(ip: IPAddress) -> bool:
    ip = _plain(ip)
    return ip.is_global and not ip.is_multicast


def _target(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a webhook URL, or WebhookRefused."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise WebhookRefused(f"webhook URL is malformed: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused("webhook must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise WebhookRefused("webhook URL must not carry a user name or password")
    return scheme, parts.hostname.lower().rstrip("."), port or (443 if scheme == "https" else 80)


def resolve_webhook(url: str, allow: str = "") -> list[str]:
    """The addresses the webhook may be sent to (resolved now), or WebhookRefused."""
    _scheme, host, port = _target(url)
    names, nets = parse_allow(allow)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as e:
            raise WebhookRefused(f"webhook host {host!r} does not resolve: "
                                 f"{getattr(e, 'strerror', None) or e}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(i[4][0].split("%")[0])
                                       for i in infos))
    if not addresses:
        raise WebhookRefused(f"webhook host {host!r} does not resolve")
    if host in names:
        return [str(a) for a in addresses]
    for a in addresses:
        if not is_public(a) and not any(_plain(a) in n or a in n for n in nets):
            raise WebhookRefused(
                f"webhook host {host!r} is (or resolves to) {_plain(a)}, a loopback, private, "
                "link-local or reserved address: the server does not post there unless the "
                "webhook_allow setting names the host or its network")
    return [str(a) for a in addresses]


def check_webhook(url: str | None, allow: str = "") -> None:
    """At submission: refuse (400) a webhook the server would not send."""
    if url:
        resolve_webhook(url, allow)


def post_webhook(url: str, job: dict[str, Any]) -> str:
    """POST the job summary; returns a short status recorded on the job."""
    import json

    from ...settings import get_settings
    from ..security import scrub_paths, server_path_replacements

    settings = get_settings()
    try:
        addresses = resolve_webhook(url, settings.webhook_allow)
    except WebhookRefused as e:
        log.warning("job %s: webhook %s refused: %s", job.get("id"), url, e)
        return f"refused: {e}"[:256]
    scheme, host, port = _target(url)
    parts = urlsplit(url)
    ip = addresses[0]  # connect to the address just checked, not to a fresh lookup
    netloc = (f"[{ip}]" if ":" in ip else ip) + (f":{parts.port}" if parts.port else "")
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    # Server paths stay on the server, as in the API's answers.
    body = scrub_paths(json.dumps(summary(job), default=str), server_path_replacements(settings))
    extensions = {"sni_hostname": host} if scheme == "https" else {}
    try:
        # trust_env=False: a proxy from the environment would connect somewhere else.
        with httpx.Client(timeout=TIMEOUT_S, follow_redirects=False, trust_env=False) as c:
            r = c.post(pinned, content=body.encode(), extensions=extensions,
                       headers={"Host": parts.netloc, "Content-Type": "application/json"})
    except httpx.HTTPError as e:
        log.warning("job %s: webhook %s failed: %s", job.get("id"), url, e)
        return f"error: {type(e).__name__}"
    log.info("job %s: webhook %s -> %d (%s:%d)", job.get("id"), url, r.status_code, ip, port)
    return f"http {r.status_code}"
