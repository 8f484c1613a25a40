"""The Train page retries a cancelled (or failed) training job: its Retry button puts the job
back in the queue, and the page follows it as it resumes from its last checkpoint to the
end. Real browser (Debian's Chromium via Playwright), real `polychrome serve` and worker."""

from __future__ import annotations

import pytest

from .test_browser import CHROMIUM, _go

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="browser tests need Debian's Chromium at "
                       "/usr/bin/chromium (apt-get install -y chromium)"),
]
TIMEOUT_MS = 180_000


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from serving.live import start_server
    from serving.test_restore_routes import _dataset

    home = tmp_path_factory.mktemp("retry-web") / "home"
    home.mkdir()
    _dataset(home, "shapes")
    server = start_server(home, workers=1)
    yield server
    server.stop()


def test_a_cancelled_training_job_resumes_from_the_page(page, live):
    from playwright.sync_api import expect

    from serving.live import wait_for, wait_job

    steps = 300
    body = {"kind": "train", "model": "dcgan", "dataset": "shapes", "steps": steps,
            "resolution": 16, "batch_size": 8, "name": "again",
            "config": {"model_config": {"width": 8, "z_dim": 16}, "log_every": 1,
                       "checkpoint_every": 5, "sample_every": 0}}
    with live.client() as c:
        job = c.post("/api/jobs", json=body).json()
        wait_for(lambda: c.get(f"/api/jobs/{job['id']}").json()["step"] >= 10, 120,
                 what="training to pass a checkpoint")
        assert c.post(f"/api/jobs/{job['id']}/cancel").status_code == 202
        stopped = wait_job(c, job["id"], timeout=120)
    assert stopped["state"] == "cancelled" and 0 < stopped["step"] < steps, stopped

    _go(page, live, "train")
    recent = page.locator("section.panel", has_text="Recent training jobs")
    expect(recent.get_by_role("cell", name="cancelled")).to_be_visible()
    recent.get_by_role("button", name="Watch").click()
    view = page.get_by_role("region", name="Training job")
    expect(view.get_by_text("State: cancelled")).to_be_visible()
    retry = view.get_by_role("button", name="Retry")
    expect(retry).to_be_visible()

    retry.click()
    view = page.get_by_role("region", name="Training job")  # the page follows it anew
    expect(view.get_by_text("Training finished.")).to_be_visible(timeout=TIMEOUT_MS)
    expect(view.get_by_role("link", name="See model again v1")).to_be_visible()
    expect(view.get_by_role("button", name="Retry")).to_be_hidden()  # nothing to retry

    with live.client() as c:
        done = c.get(f"/api/jobs/{job['id']}").json()
    assert done["state"] == "succeeded" and done["attempts"] == 2, done
    assert done["result"]["resumed"] is True and done["result"]["steps"] == steps
