"""The Restore page in a real browser (Debian's Chromium via Playwright) against a real
`polychrome serve`: pick Inpaint, choose a picture, paint the mask with pointer events
(a mouse stroke and a finger's), restore, compare before / after, download the full-size
PNG; the Create page offers the cascade (Upscale x2 / x4) when an sr model exists, and
the Train page sends pix2pix's task, scales and crop. Tiny untrained models: fast."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from polychrome.imageio import read_png_metadata

from .test_browser import CHROMIUM, DESKTOP, PHONE, _assert_labelled, _go, _photo, _shot

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="browser tests need Debian's Chromium at "
                       "/usr/bin/chromium (apt-get install -y chromium)"),
]
P2P = dict(resolution=32, width=8, max_width=16, n_down=2, n_blocks=1, d_width=8)
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from serving.live import register_tiny, start_server
    from serving.test_restore_routes import _dataset

    home = tmp_path_factory.mktemp("restore-web") / "home"
    home.mkdir()
    register_tiny(home, "pix2pix", "photo-fill", [], task="inpaint", **P2P)
    register_tiny(home, "pix2pix", "photo-sr", [], task="sr", scales=[2, 4], **P2P)
    register_tiny(home, "dcgan", "dc", [], resolution=16, width=8, z_dim=16)
    _dataset(home, "shapes")
    server = start_server(home, workers=0)
    yield server
    server.stop()






def _drag(page, box, points) -> None:
    """A mouse stroke through `points` given as fractions of the box."""
    xs = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*xs[0])
    page.mouse.down()
    for x, y in xs[1:]:
        page.mouse.move(x, y, steps=6)
    page.mouse.up()


def _finger(canvas, box, points) -> None:
    """A touch stroke: pointer events of pointerType 'touch' (what a phone sends)."""
    for i, (fx, fy) in enumerate(points):
        kind = "pointerdown" if i == 0 else "pointermove"
        canvas.dispatch_event(kind, {"pointerId": 7, "pointerType": "touch", "isPrimary": True,
                                     "clientX": box["x"] + fx * box["width"],
                                     "clientY": box["y"] + fy * box["height"],
                                     "buttons": 1, "bubbles": True})
    canvas.dispatch_event("pointerup", {"pointerId": 7, "pointerType": "touch",
                                        "bubbles": True})


def test_inpaint_on_the_restore_page(page, live, tmp_path):
    from playwright.sync_api import expect

    photo = _photo(tmp_path / "street.png", 120, 80)
    _go(page, live, "restore")
    expect(page.get_by_role("heading", name="Restore", level=1)).to_be_visible()
    assert page.get_by_role("link", name="Restore").get_attribute("aria-current") == "page"
    # sr x4 lists the sr model; inpaint lists the inpainting one
    page.get_by_label("Task").select_option(label="Super-resolution ×4")
    assert page.get_by_label("Model").locator("option").all_inner_texts() == [
        "photo-sr (pix2pix, v1)"]
    page.get_by_label("Task").select_option("inpaint")
    assert page.get_by_label("Model").locator("option").all_inner_texts() == [
        "photo-fill (pix2pix, v1)"]
    page.get_by_label(re.compile("Drop a picture here")).set_input_files(photo)
    expect(page.get_by_text("street.png: 120 × 80 px")).to_be_visible()
    _assert_labelled(page)

    # Restore before painting: a clear message, no request
    page.get_by_role("button", name="Restore", exact=True).click()
    expect(page.get_by_role("alert").filter(has_text="paint the parts to fill in")).to_be_visible()

    canvas = page.get_by_role("img", name=re.compile("^Mask"))
    box = canvas.bounding_box()
    assert box["width"] > 200  # shown larger than the picture's 120 px: scaled back on send
    page.get_by_label(re.compile("^Brush size")).fill("40")
    _drag(page, box, [(0.35, 0.3), (0.55, 0.45), (0.6, 0.7)])
    _finger(canvas, box, [(0.75, 0.25), (0.8, 0.4), (0.82, 0.55)])
    expect(page.get_by_text("Mask painted")).to_be_visible()

    page.get_by_role("button", name="Restore", exact=True).click()
    result = page.locator(".restore-result")
    expect(result).to_be_visible(timeout=TIMEOUT_MS)
    expect(result).to_contain_text("120 × 80 → 120 × 80 px, 1 tile")
    after = page.get_by_role("img", name=re.compile("^After:"))
    expect(after).to_have_js_property("complete", True)
    assert after.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [120, 80]
    before = page.get_by_role("img", name="Before: the picture")
    assert before.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [120, 80]
    # the slider moves the cut between before (left) and after (right)
    compare = page.locator(".ba")
    page.get_by_label(re.compile("^Before")).fill("20")
    assert compare.evaluate("b => b.style.getPropertyValue('--pos')") == "20%"
    clip = before.evaluate("i => getComputedStyle(i).clipPath")
    assert clip.startswith("inset(") and "80%" in clip, clip
    cbox = compare.bounding_box()
    page.mouse.click(cbox["x"] + 0.75 * cbox["width"], cbox["y"] + cbox["height"] / 2)
    assert compare.evaluate("b => b.style.getPropertyValue('--pos')") == "75%"
    saved = page.locator(".saved")
    expect(saved).to_contain_text(re.compile(r"Saved in the gallery as image \d+\."))
    image_id = int(saved.get_attribute("data-image-id"))
    _shot(page, "restore-desktop")

    with page.expect_download() as dl:
        page.get_by_role("link", name=re.compile("^Download")).click()
    path = tmp_path / "restored.png"
    dl.value.save_as(path)
    assert dl.value.suggested_filename == "photo-fill-inpaint-120x80.png"
    with Image.open(path) as im:
        assert im.size == (120, 80)
        out = np.asarray(im.convert("RGB"))
    meta = read_png_metadata(path)
    assert meta["task"] == "inpaint" and meta["model"] == "photo-fill"
    fraction = float(meta["mask_fraction"])
    assert 0.02 < fraction < 0.5, fraction  # both strokes, scaled to the picture's pixels
    src = np.asarray(Image.open(photo).convert("RGB"))
    # far from both strokes the picture is kept byte for byte
    assert np.array_equal(out[:, :20], src[:, :20]) and np.array_equal(out[-8:], src[-8:])
    assert not np.array_equal(out, src)
    with live.client() as c:
        info = c.get(f"/api/images/{image_id}").json()
        assert info["metadata"]["mask_fraction"] == meta["mask_fraction"]
        assert c.get(f"/api/images/{image_id}.png").content == path.read_bytes()

    # Clear empties the mask; a server refusal shows as a message
    page.get_by_role("button", name="Clear mask").click()
    expect(page.get_by_text("Mask cleared")).to_be_visible()

    page.set_viewport_size(PHONE)
    overflow = page.evaluate("() => document.documentElement.scrollWidth - innerWidth")
    assert overflow <= 1, f"the Restore page is wider than a phone by {overflow}px"
    _shot(page, "restore-phone")
    page.set_viewport_size(DESKTOP)


def test_sr_and_the_cascade_on_create(page, live, tmp_path):
    from playwright.sync_api import expect

    _go(page, live, "restore?task=sr2")
    page.get_by_label(re.compile("Drop a picture here")).set_input_files(
        _photo(tmp_path / "small.png", 40, 30))
    expect(page.get_by_text("small.png: 40 × 30 px → 80 × 60 px")).to_be_visible()
    page.get_by_role("button", name="Restore", exact=True).click()
    expect(page.locator(".restore-result")).to_contain_text("40 × 30 → 80 × 60 px",
                                                             timeout=TIMEOUT_MS)

    _go(page, live, "create")
    upscale = page.get_by_label("Upscale")
    expect(upscale).to_be_enabled()
    assert upscale.locator("option").all_inner_texts() == ["No", "×2", "×4"]
    upscale.select_option("4")
    page.get_by_label("How many").fill("1")
    page.get_by_role("button", name="Generate").click()
    card = page.locator("article.card").first
    expect(card).to_contain_text("×4, 64 × 64 px", timeout=TIMEOUT_MS)
    assert card.locator("img").evaluate("i => i.naturalWidth") == 64


def test_train_page_sends_pix2pix_task_scales_and_crop(page, live):
    from playwright.sync_api import expect

    _go(page, live, "train")
    page.get_by_label("Dataset").select_option("shapes")
    page.get_by_label("Model family").select_option("pix2pix")
    task = page.get_by_label("Task", exact=True)
    expect(task).to_be_visible()
    expect(page.get_by_label("Resolution (px)")).to_be_hidden()  # the crop size sets it
    task.select_option("inpaint")
    expect(page.get_by_label("Scale", exact=True)).to_be_hidden()
    task.select_option("sr")
    _assert_labelled(page)
    page.get_by_label("Scale", exact=True).fill("5")
    page.get_by_label("Crop size (px)").fill("64")
    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_role("alert").filter(has_text="2, 3, 4, 8")).to_be_visible(
        timeout=TIMEOUT_MS)  # a 400
    page.get_by_label("Scale", exact=True).fill("2,4")
    page.get_by_role("button", name="Start training").click()
    # (the server builds and checks the whole run config before it answers)
    expect(page.get_by_role("heading", name="Training pix2pix on shapes")).to_be_visible(
        timeout=TIMEOUT_MS)
    with live.client() as c:
        job = c.get("/api/jobs?kind=train").json()["items"][0]
    cfg = job["params"]["config"]
    assert cfg["model"] == "pix2pix" and cfg["crop"] == 64 and cfg["resolution"] == 64
    assert cfg["model_config"]["task"] == "sr" and cfg["model_config"]["scales"] == [2, 4]
