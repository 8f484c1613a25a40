"""Browser fixtures shared by the page tests: one Chromium context per test module, and a
tab that records every request and script error (none external, none allowed)."""

from __future__ import annotations

import pytest

from .test_browser import ARGS, CHROMIUM, DESKTOP


@pytest.fixture(scope="module")
def browser_ctx(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM),
            headless=True, args=ARGS, viewport=DESKTOP, accept_downloads=True)
        ctx.set_default_timeout(30_000)
        yield ctx
        ctx.close()


@pytest.fixture
def page(browser_ctx, live):
    """A tab that records every request and every script error (the module's `live`
    server is the only place it may fetch from)."""
    pg = browser_ctx.new_page()
    pg.requests_seen = []
    pg.errors = []
    pg.on("request", lambda r: pg.requests_seen.append(r.url))
    pg.on("pageerror", lambda e: pg.errors.append(f"pageerror: {e}"))
    pg.on("console", lambda m: pg.errors.append(f"console: {m.text}")
          if m.type == "error" and "Failed to load resource" not in m.text else None)
    yield pg
    external = [u for u in pg.requests_seen
                if not (u.startswith(live.url) or u.startswith(("blob:", "data:")))]
    assert not external, f"the page made external requests: {external[:5]}"
    assert not pg.errors, pg.errors
    pg.close()
