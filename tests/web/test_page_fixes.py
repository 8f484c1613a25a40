"""The page's first-hour fixes in a real browser (Debian's Chromium via Playwright) against a
real `polychrome serve` with no job worker (a training job stays queued): readable metrics
on the Models page, restyle variations laid out as cards, Blend clearing the previous
model's animation, every nav link on a phone screen, no broken "before" picture after a
rejected upload, the PNG info page (a Polychrome PNG opens its page with the form filled),
and a queued training job that says so (with the steps it will run), with the model
family kept across pages."""

from __future__ import annotations

import io
import os
import re

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from .test_browser import CHROMIUM, DESKTOP, PHONE, STYLES, _go, _photo, _register_stargan
from .test_browser import _shot as shot

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="browser tests need Debian's Chromium at "
                       "/usr/bin/chromium (apt-get install -y chromium)"),
]
TIMEOUT_MS = 60_000
P2P = dict(resolution=32, width=8, max_width=16, n_down=2, n_blocks=1, d_width=8)
# Metrics as an eval writes them: per-style figures, a nested group, whole numbers.
METRICS = {
    "extractor": "offline:shapes@v1/16", "seed": 0, "n": 2000, "split": "heldout",
    "style_accuracy": 0.7705, "fid": 3.4605746111809736, "kid_mean": 0.048049,
    "fid_per_style": {"flat": 5.0878, "outline": 2.8123, "shadow": 2.5934, "striped": 0.4930},
    "kid_per_style": {"flat": 0.1440, "outline": 0.0579, "shadow": 0.0752, "striped": 0.0045},
    "at_initialisation": {"fid": 70.652, "kid_mean": 2.0006},
}


def _set_metrics(home, name: str, metrics: dict) -> None:
    from polychrome.persistence.models import update_metrics

    old = os.environ.get("POLYCHROME_HOME")
    os.environ["POLYCHROME_HOME"] = str(home)
    try:
        update_metrics(name, None, metrics)
    finally:
        if old is None:
            os.environ.pop("POLYCHROME_HOME", None)
        else:
            os.environ["POLYCHROME_HOME"] = old


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from serving.live import register_tiny, start_server
    from serving.test_restore_routes import _dataset

    home = tmp_path_factory.mktemp("page-fixes") / "home"
    home.mkdir()
    _register_stargan(home)  # "sg": a translator with STYLES
    register_tiny(home, "dcgan", "dc", STYLES, resolution=16, width=8, z_dim=16,
                  num_domains=len(STYLES))
    register_tiny(home, "pix2pix", "photo-sr", [], task="sr", scales=[2, 4], **P2P)
    _set_metrics(home, "dc", METRICS)
    _dataset(home, "shapes")
    server = start_server(home, workers=0)  # a training job stays queued
    yield server
    server.stop()


def _picture(path, seed: int = 0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    return path


def test_models_page_shows_metrics_as_readable_tables(page, live):
    from playwright.sync_api import expect

    _go(page, live, "models")
    page.locator("article.model").filter(has=page.get_by_role("heading", name="dc", exact=True)
                                         ).get_by_role("button", name="Details").click()
    panel = page.locator(".panel", has_text="Model dc")
    expect(panel.locator(".metrics-view")).to_be_visible()
    text = panel.inner_text()
    assert "[object Object]" not in text
    view = panel.locator(".metrics-view")
    assert "{" not in view.inner_text()  # no raw JSON in a cell
    # named in words, whole numbers as such, an accuracy as a percentage
    expect(view.get_by_role("row", name=re.compile("^Seed"))).to_have_text(re.compile(r"Seed\s*0$"))
    expect(view.get_by_role("row", name=re.compile("^Images measured"))).to_contain_text("2,000")
    expect(view.get_by_role("row", name=re.compile("^Style accuracy"))).to_contain_text("77.")
    # one row per style with its FID and KID
    per_style = view.locator("table.matrix", has_text="Style")
    assert per_style.locator("thead th").all_inner_texts() == ["Style", "FID", "KID"]
    assert per_style.locator("tbody th").all_inner_texts() == STYLES
    expect(per_style.get_by_role("row", name=re.compile("^striped"))).to_contain_text("0.493")
    expect(view.locator(".metric-group", has_text="At initialisation")).to_contain_text("70.65")
    versions = panel.locator("table.versions tbody tr")
    expect(versions).to_have_count(1)
    expect(versions.first.locator("td").last).to_have_text(re.compile(r"^FID 3\.461 · KID 0\.04805"))
    shot(page, "models-metrics-desktop")


def test_restyle_variations_are_cards_with_their_download(page, live, tmp_path):
    from playwright.sync_api import expect

    _go(page, live, "restyle")
    page.get_by_label("Model").select_option("sg")
    page.get_by_label(re.compile("Drop a picture here")).set_input_files(
        _picture(tmp_path / "in.png"))
    expect(page.get_by_text(re.compile("^Preview: Save keeps"))).to_be_visible(
        timeout=TIMEOUT_MS)
    page.get_by_role("spinbutton", name="Variations").fill("4")
    page.get_by_role("button", name="Make variations").click()
    cards = page.locator("[aria-label=Variations] figure.card")
    expect(cards).to_have_count(4, timeout=TIMEOUT_MS)
    for card in cards.all():
        box = card.bounding_box()
        assert box["width"] >= 100, f"a variation card is {box['width']:.0f} px wide"
        img = card.locator("img").bounding_box()
        assert img["width"] >= 80
        link = card.get_by_role("link", name="Download").bounding_box()
        assert box["x"] <= link["x"] and link["x"] + link["width"] <= box["x"] + box["width"]
        assert box["y"] <= link["y"] and link["y"] + link["height"] <= box["y"] + box["height"]
    shot(page, "restyle-variations-desktop")


def test_blend_forgets_the_previous_models_animation(page, live):
    from playwright.sync_api import expect

    _go(page, live, "blend")
    page.get_by_label("Model", exact=True).select_option("dc")
    result = page.get_by_role("img", name=re.compile("^Blend:"))
    expect(result).to_have_attribute("src", re.compile("^blob:"), timeout=TIMEOUT_MS)
    page.get_by_label("Frames").fill("2")
    page.get_by_role("button", name="Animate").click()
    gif = page.locator("img.anim")
    expect(gif).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_role("link", name="Download GIF")).to_be_visible()
    shot(page, "blend-animation-desktop")

    page.get_by_label("Model", exact=True).select_option("sg")  # a translator: no picture yet
    expect(gif).to_be_hidden()
    assert gif.get_attribute("src") is None
    expect(page.get_by_role("link", name="Download GIF")).to_be_hidden()
    assert page.locator("figure.result img").get_attribute("src") is None  # dc's blend too


def test_every_nav_link_is_on_a_phone_screen(page, live):
    page.set_viewport_size(PHONE)
    try:
        _go(page, live, "create")
        links = page.locator("nav a[data-page]")
        for link in links.all():
            name = link.inner_text()
            box = link.bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], name
            assert box["y"] + box["height"] <= PHONE["height"], name
            # nothing covers it: a tap at its centre lands on it
            hit = page.evaluate("([x, y]) => document.elementFromPoint(x, y)?.textContent",
                                [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2])
            assert hit == name, (name, hit)
        assert links.count() == 9  # every page, PNG info included
        shot(page, "nav-phone")
        page.get_by_role("link", name="Models").click()
        from playwright.sync_api import expect

        expect(page.get_by_role("heading", name="Models", level=1)).to_be_visible()
        assert page.evaluate("() => document.documentElement.scrollWidth - innerWidth") <= 1
    finally:
        page.set_viewport_size(DESKTOP)


def test_a_rejected_upload_leaves_no_broken_picture(page, live, tmp_path):
    from playwright.sync_api import expect

    good = _picture(tmp_path / "good.png")
    bad = tmp_path / "broken.png"
    bad.write_bytes(good.read_bytes()[:60])
    _go(page, live, "restyle")
    page.get_by_label("Model").select_option("sg")
    page.get_by_label(re.compile("Drop a picture here")).set_input_files(bad)
    expect(page.get_by_role("alert").filter(has_text="broken.png")).to_be_visible(
        timeout=TIMEOUT_MS)
    before = page.locator(".compare figure").first.locator("img")
    assert before.get_attribute("src") is None
    assert before.evaluate("img => getComputedStyle(img).visibility") == "hidden"
    expect(before).to_have_attribute("alt", "Before: no picture yet")
    # a good picture afterwards shows as usual
    page.get_by_label(re.compile("Drop a picture here")).set_input_files(good)
    expect(page.get_by_text(re.compile("^Preview: Save keeps"))).to_be_visible(
        timeout=TIMEOUT_MS)
    assert before.evaluate("img => img.complete && img.naturalWidth") == 32

    # Restore: the server's refusal, and the picture off the screen
    _go(page, live, "restore")
    page.get_by_label(re.compile("Drop a picture here")).set_input_files(bad)
    page.get_by_role("button", name="Restore", exact=True).click()
    expect(page.get_by_role("alert").filter(has_text="broken.png")).to_be_visible(
        timeout=TIMEOUT_MS)
    expect(page.locator(".paint")).to_be_hidden()


# -- PNG info ---------------------------------------------------------------------------------
def _drop_png(page, live, path) -> None:
    _go(page, live, "pnginfo")
    page.get_by_label(re.compile("Drop a PNG made by Polychrome")).set_input_files(path)


def _save(tmp_path, name: str, r) -> str:
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
    (tmp_path / name).write_bytes(r.content)
    return tmp_path / name


def test_png_info_opens_a_generated_picture_on_create(page, live, tmp_path):
    from playwright.sync_api import expect

    with live.client() as c:
        png = _save(tmp_path, "gen.png", c.post("/api/generate", json={
            "model": "dc", "style": "shadow", "seed": 41, "truncation": 0.7}))
    _drop_png(page, live, png)
    info = page.get_by_role("region", name="What made this picture")
    expect(info).to_contain_text("Generated by dc: style shadow, seed 41, truncation 0.7")
    expect(info.locator("table")).to_contain_text("polychrome_version")
    info.get_by_role("button", name="Open in Create").click()
    expect(page.get_by_role("heading", name="Create", level=1)).to_be_visible()
    expect(page.get_by_label("Model")).to_have_value("dc")
    expect(page.get_by_label("Seed", exact=True)).to_have_value("41")
    expect(page.get_by_role("button", name="shadow", exact=True)).to_have_attribute(
        "aria-pressed", "true")
    expect(page.get_by_text("Settings loaded from the PNG")).to_be_visible()


def test_png_info_opens_a_restyled_picture_on_restyle(page, live, tmp_path):
    from playwright.sync_api import expect

    photo = _photo(tmp_path / "photo.png", 40, 30)
    with live.client() as c:
        png = _save(tmp_path, "restyled.png", c.post(
            "/api/restyle", data={"model": "sg", "style": "striped", "strength": "0.6",
                                  "seed": "3"},
            files={"image": ("photo.png", photo.read_bytes(), "image/png")}))
    _drop_png(page, live, png)
    info = page.get_by_role("region", name="What made this picture")
    expect(info).to_contain_text("Restyled by sg into striped, strength 0.6, seed 3")
    expect(info).to_contain_text("is not inside the PNG")  # the restyled picture
    shot(page, "pnginfo-desktop")
    info.get_by_role("button", name="Open in Restyle").click()
    expect(page.get_by_role("heading", name="Restyle", level=1)).to_be_visible()
    expect(page.get_by_label("Model")).to_have_value("sg")
    expect(page.get_by_role("button", name="striped", exact=True)).to_have_attribute(
        "aria-pressed", "true")
    expect(page.get_by_label(re.compile("^Strength"))).to_have_value("0.6")
    expect(page.get_by_label("Seed", exact=True)).to_have_value("3")
    expect(page.get_by_text("choose the picture to restyle")).to_be_visible()
    # and it restyles with them once the picture is there
    page.get_by_label(re.compile("Drop a picture here")).set_input_files(photo)
    after = page.get_by_role("img", name=re.compile("^After:"))
    expect(after).to_have_attribute("alt", re.compile("striped, strength 0.6"),
                                    timeout=TIMEOUT_MS)


def test_png_info_opens_a_blend_on_blend(page, live, tmp_path):
    from playwright.sync_api import expect

    with live.client() as c:
        png = _save(tmp_path, "mix.png", c.post("/api/mix", json={
            "model": "dc", "weights": {"flat": 0.25, "striped": 0.75}, "seed": 9,
            "save": False}))
    _drop_png(page, live, png)
    page.get_by_role("button", name="Open in Blend").click()
    expect(page.get_by_role("heading", name="Blend", level=1)).to_be_visible()
    expect(page.get_by_label("Model", exact=True)).to_have_value("dc")
    expect(page.get_by_label("striped", exact=True)).to_have_value("0.75")
    expect(page.get_by_label("flat", exact=True)).to_have_value("0.25")
    expect(page.get_by_label("outline", exact=True)).to_have_value("0")
    expect(page.get_by_label("Seed", exact=True)).to_have_value("9")
    # the page renders that blend: the same pixels as the file
    result = page.get_by_role("img", name=re.compile("^Blend:"))
    expect(result).to_have_attribute("src", re.compile("^blob:"), timeout=TIMEOUT_MS)
    shown = bytes(result.evaluate("img => fetch(img.src).then(r => r.arrayBuffer())"
                                  ".then(b => Array.from(new Uint8Array(b)))"))
    with Image.open(io.BytesIO(shown)) as a, Image.open(png) as b:
        assert np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))


def test_the_gallery_opens_a_picture_on_its_page_with_the_form_filled(page, live):
    from playwright.sync_api import expect

    with live.client() as c:
        r = c.post("/api/mix", json={"model": "dc", "weights": {"outline": 0.4, "shadow": 0.6},
                                     "seed": 17, "save": True})
        assert r.status_code == 200, r.text
        image_id = r.headers["x-polychrome-image-id"]
    _go(page, live, "gallery")
    page.locator(f"button.thumb[data-id='{image_id}']").click()
    page.get_by_role("dialog").get_by_role("button", name="Open in Blend").click()
    expect(page.get_by_role("heading", name="Blend", level=1)).to_be_visible()
    expect(page.get_by_label("shadow", exact=True)).to_have_value("0.6")
    expect(page.get_by_label("outline", exact=True)).to_have_value("0.4")
    expect(page.get_by_label("flat", exact=True)).to_have_value("0")
    expect(page.get_by_label("Seed", exact=True)).to_have_value("17")


def test_png_info_opens_a_restored_picture_on_restore(page, live, tmp_path):
    from playwright.sync_api import expect

    photo = _photo(tmp_path / "small.png", 24, 16)
    with live.client() as c:
        png = _save(tmp_path, "sr.png", c.post(
            "/api/restore", data={"model": "photo-sr", "scale": "4"},
            files={"image": ("small.png", photo.read_bytes(), "image/png")}))
    _drop_png(page, live, png)
    expect(page.get_by_text("super-resolution ×4 by photo-sr")).to_be_visible()
    page.get_by_role("button", name="Open in Restore").click()
    expect(page.get_by_role("heading", name="Restore", level=1)).to_be_visible()
    expect(page.get_by_label("Task")).to_have_value("sr4")
    expect(page.get_by_label("Model")).to_have_value("photo-sr")


def test_png_info_reads_every_text_chunk_and_refuses_what_is_not_ours(page, live, tmp_path):
    from playwright.sync_api import expect

    # zTXt (compressed) and iTXt (UTF-8) chunks, as other writers make them
    info = PngImagePlugin.PngInfo()
    info.add_text("model", "dc")
    info.add_text("style", "outline")
    info.add_text("seed", "12")
    info.add_text("truncation", "1.0")
    info.add_text("comment", "peinture à l'huile " * 40, zip=True)
    info.add_itxt("title", "虹 — rainbow")
    path = tmp_path / "chunks.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path, pnginfo=info)
    _drop_png(page, live, path)
    region = page.get_by_role("region", name="What made this picture")
    expect(region).to_contain_text("Generated by dc: style outline, seed 12")
    expect(region.get_by_role("row", name=re.compile("^title"))).to_contain_text("虹 — rainbow")
    expect(region.get_by_role("row", name=re.compile("^comment"))).to_contain_text(
        "peinture à l'huile peinture")

    plain = tmp_path / "plain.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(plain)
    page.get_by_label(re.compile("Drop a PNG made by Polychrome")).set_input_files(plain)
    expect(page.locator(".error")).to_contain_text("plain.png carries no Polychrome recipe")
    expect(region).to_be_hidden()

    text = tmp_path / "notes.png"
    text.write_text("not a picture at all")
    page.get_by_label(re.compile("Drop a PNG made by Polychrome")).set_input_files(text)
    expect(page.locator(".error")).to_contain_text("notes.png: not a PNG file")

    cut = tmp_path / "cut.png"
    cut.write_bytes(path.read_bytes()[:-20])
    page.get_by_label(re.compile("Drop a PNG made by Polychrome")).set_input_files(cut)
    expect(page.locator(".error")).to_contain_text("cut.png: the PNG is cut short")


# -- Train ------------------------------------------------------------------------------------
def test_a_queued_job_says_so_and_the_family_is_kept(page, live):
    from playwright.sync_api import expect

    _go(page, live, "train")
    family = page.get_by_label("Model family")
    expect(family).to_have_value("dcgan")
    family.select_option("wgan-gp")
    assert "model=wgan-gp" in page.url
    _go(page, live, "create")
    page.get_by_role("link", name="Train").click()  # the nav link has no parameters
    expect(page.get_by_role("heading", name="Train", level=1)).to_be_visible()
    expect(family).to_have_value("wgan-gp")
    page.reload()
    expect(family).to_have_value("wgan-gp")

    page.get_by_label("Dataset").select_option("shapes")
    page.get_by_role("radio", name=re.compile("Quick")).check()
    page.get_by_text("Advanced").click()
    page.get_by_label("Steps", exact=True).fill("40")
    page.get_by_label("Resolution (px)").fill("16")
    page.get_by_role("button", name="Start training").click()
    view = page.get_by_role("region", name="Training job")
    eta = view.locator(".eta")
    # no worker here: it stays queued
    expect(eta).to_contain_text("Queued · 0 / 40 steps", timeout=TIMEOUT_MS)
    expect(view.get_by_text(re.compile(r"^State: queued, waiting for a free worker \(\d+ s so far\)"))
           ).to_be_visible()
    assert "Step 0 / 0" not in view.inner_text()
    # the waiting time moves on its own, second by second
    expect(view.get_by_text(re.compile(r"\(([1-9]\d*) s so far\)"))).to_be_visible()
    shot(page, "train-queued-desktop")
    view.get_by_role("button", name="Cancel").click()
    expect(view.get_by_text("State: cancelled")).to_be_visible(timeout=TIMEOUT_MS)
    page.evaluate("() => localStorage.clear()")


def test_quick_runs_the_steps_the_estimate_sized_for_this_machine(page, live):
    """Measured, Quick is sized to about 5 minutes here; the job started next runs those steps
    (not the preset's nominal count)."""
    from playwright.sync_api import expect

    _go(page, live, "train")
    page.get_by_label("Model family").select_option("dcgan")
    page.get_by_label("Dataset").select_option("shapes")
    page.get_by_role("radio", name=re.compile("Quick")).check()
    page.get_by_text("Advanced").click()
    page.get_by_label("Resolution (px)").fill("16")
    page.get_by_label("Batch size", exact=True).fill("8")
    with page.expect_response(lambda r: r.url.endswith("/api/presets/estimate")) as answer:
        page.get_by_role("button", name="Measure time on this machine").click()
    sized = answer.value.json()["steps"]
    expect(page.get_by_text(re.compile(rf"About .* for {sized:,} steps on this machine"))
           ).to_be_visible(timeout=TIMEOUT_MS)
    with page.expect_request(lambda r: r.url.endswith("/api/jobs") and r.method == "POST") as sent:
        page.get_by_role("button", name="Start training").click()
    assert sent.value.post_data_json["steps"] == sized
    view = page.get_by_role("region", name="Training job")
    expect(view.locator(".eta")).to_contain_text(f"Queued · 0 / {sized:,} steps",
                                                 timeout=TIMEOUT_MS)
    view.get_by_role("button", name="Cancel").click()
    expect(view.get_by_text("State: cancelled")).to_be_visible(timeout=TIMEOUT_MS)
    page.evaluate("() => localStorage.clear()")
