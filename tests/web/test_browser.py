"""The web page in a real browser (Debian's Chromium via Playwright) against a real
`polychrome serve` with a real job worker: everything a person does without a terminal.

dataset folder upload -> cleaning report -> quick training (live progress) -> model page
-> generate in two styles -> restyle with a reference -> blend slider -> gallery download
and regenerate; a picture restyled at its own size by a model trained on crops (preview,
then Save / Download full size); bad uploads show a message; screenshots of every page at
desktop and phone width go to $POLYCHROME_SCREENSHOTS (default ./screenshots, gitignored;
docs/screenshots holds copies for the README).

CI needs: `apt-get install -y chromium` and `pip install playwright` (never
`playwright install`: the system Chromium is used).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from polychrome.imageio import read_png_metadata

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="browser tests need Debian's Chromium at "
                       "/usr/bin/chromium (apt-get install -y chromium)"),
]
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
PAGES = ["create", "restyle", "blend", "gallery", "datasets", "train", "models", "pnginfo"]
STYLES = ["flat", "outline", "shadow", "striped"]  # make_shapes_dataset's styles
TIMEOUT_MS = 90_000


def _screens_dir() -> Path:
    d = Path(os.environ.get("POLYCHROME_SCREENSHOTS")
             or Path(__file__).resolve().parents[2] / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _register_stargan(home: Path) -> None:
    """A tiny untrained translator in the store, so restyle runs without a second training."""
    from serving.live import register_tiny

    register_tiny(home, "stargan", "sg", STYLES, resolution=16, num_domains=4, width=8,
                  max_width=16, style_dim=8, latent_dim=4, mapping_dim=16,
                  mapping_shared_layers=1, mapping_head_layers=1, e_width=8, e_max_width=16,
                  d_width=8, d_max_width=16)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from serving.live import NATIVE_META, NATIVE_STARGAN, register_tiny, start_server

    home = tmp_path_factory.mktemp("web") / "home"
    home.mkdir()
    _register_stargan(home)
    register_tiny(home, "stargan", "photo-nat", STYLES, meta=NATIVE_META,
                  **{**NATIVE_STARGAN, "num_domains": 4})
    server = start_server(home, workers=1)
    yield server
    server.stop()






def _go(page, live, where: str) -> None:
    page.goto(f"{live.url}/#/{where}")
    page.wait_for_load_state("networkidle")


def _shot(page, name: str) -> None:
    page.screenshot(path=str(_screens_dir() / f"{name}.png"), full_page=True)


def _img_digest(page, locator) -> str:
    """sha256 of the bytes an <img> shows (its blob), read inside the page."""
    data = locator.evaluate("img => fetch(img.src).then(r => r.arrayBuffer())"
                            ".then(b => Array.from(new Uint8Array(b)))")
    return hashlib.sha256(bytes(data)).hexdigest()


def _assert_labelled(page) -> None:
    """Every visible form control has a label (or an aria-label)."""
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
        .filter(el => el.type !== 'hidden' && !el.closest('[hidden]'))
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
        .map(el => el.outerHTML.slice(0, 80))""")
    assert not unlabelled, unlabelled


def _shapes_folder(root: Path) -> Path:
    from polychrome.data.synthetic import make_shapes_dataset

    folder = make_shapes_dataset(root / "shapes", n=12, size=32)
    # Two files the cleaner drops, so the report has something to explain.
    shutil.copy(folder / "flat" / "shape-0000.png", folder / "flat" / "again.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / "outline" / "tiny.png")
    return folder


def test_everything_from_the_page(page, live, tmp_path):
    from playwright.sync_api import expect

    # -- Datasets: upload a folder, follow the import, read the cleaning report -------------
    folder = _shapes_folder(tmp_path)
    _go(page, live, "datasets")
    _assert_labelled(page)
    page.get_by_label("Name").fill("shapes")
    page.get_by_label(re.compile("Drop a folder here")).set_input_files(folder)
    expect(page.get_by_text(re.compile(r"50 file\(s\) in 4 style folder"))).to_be_visible()
    page.get_by_role("button", name="Upload and import").click()
    expect(page.get_by_text(re.compile(r"Imported 48 image\(s\) into shapes v1"))).to_be_visible(
        timeout=TIMEOUT_MS)
    dropped = page.locator("table.dropped")
    expect(dropped).to_contain_text("duplicate")
    expect(dropped).to_contain_text("too_small")
    for style in STYLES:
        expect(page.get_by_role("rowheader", name=style)).to_be_visible()
    preview = page.get_by_role("img", name=re.compile("Preview grid of shapes"))
    expect(preview).to_have_js_property("complete", True)
    assert preview.evaluate("img => img.naturalWidth") > 0
    _shot(page, "datasets-desktop")

    # -- Train: quick preset made tiny in Advanced, measured estimate, live job view -------
    _go(page, live, "train")
    _assert_labelled(page)
    page.get_by_label("Dataset").select_option("shapes")
    page.get_by_label("Model family").select_option("dcgan")
    page.get_by_role("radio", name=re.compile("Quick")).check()
    page.get_by_text("Advanced").click()
    page.get_by_label("Steps", exact=True).fill("6")
    page.get_by_label("Resolution (px)").fill("16")
    page.get_by_label("Batch size", exact=True).fill("8")
    page.get_by_label("Model name").fill("shapes-dcgan")
    page.get_by_role("button", name="Measure time on this machine").click()
    expect(page.get_by_text(re.compile(r"About .* for 6 steps on this machine \(measured"))
           ).to_be_visible(timeout=TIMEOUT_MS)
    page.get_by_role("button", name="Start training").click()
    expect(page.locator(".eta")).to_contain_text("Step 6 / 6", timeout=TIMEOUT_MS)
    link = page.get_by_role("link", name="See model shapes-dcgan v1")
    expect(link).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_role("img", name=re.compile("Sample grid"))).to_be_visible()
    expect(page.get_by_text(re.compile(r"^Samples at step \d+"))).to_be_visible()
    assert page.locator("progress").evaluate("p => p.value") == 1
    # the loss chart names the main losses in words; the rest is one checkbox away
    legend = page.locator(".legend span")
    assert sorted(re.sub(r" -?[\d.e+-]+$", "", t) for t in legend.all_inner_texts()) == [
        "Discriminator loss", "Generator loss"]
    expect(page.get_by_role("rowheader", name="Generator loss")).to_be_visible()  # the table
    _shot(page, "train-desktop")
    page.get_by_label(re.compile("Show every logged value")).check()
    expect(page.locator(".legend")).to_contain_text("Discriminator score, real")

    # -- Models: the finished run is there, with its sample grid and card -----------------
    link.click()
    expect(page.locator(".model-card")).to_contain_text("shapes-dcgan")
    expect(page.get_by_role("img", name="Sample grid of shapes-dcgan")).to_be_visible()
    _shot(page, "models-desktop")

    # -- Create: two styles, images arrive, download is a PNG with metadata ----------------
    _go(page, live, "create")
    _assert_labelled(page)
    page.get_by_label("Model").select_option("shapes-dcgan")
    page.get_by_label("How many").fill("2")
    for i, style in enumerate(("flat", "striped")):
        page.get_by_role("button", name=style, exact=True).click()
        page.get_by_role("button", name="Generate").click()
        expect(page.locator("article.card")).to_have_count(2 * (i + 1), timeout=TIMEOUT_MS)
        expect(page.locator("article.card").first).to_contain_text(style)
    with page.expect_download() as dl:
        page.locator("article.card").first.get_by_role("link", name="Download").click()
    path = tmp_path / "download.png"
    dl.value.save_as(path)
    meta = read_png_metadata(path)
    assert meta["model"] == "shapes-dcgan" and meta["style"] == "striped" and meta["seed"] == "2"
    _shot(page, "create-desktop")

    # -- Restyle: a picture, a reference, the strength slider -------------------------------
    _go(page, live, "restyle")
    _assert_labelled(page)
    page.get_by_label("Model").select_option("sg")
    page.get_by_label(re.compile("Drop a picture here")).set_input_files(
        folder / "flat" / "shape-0001.png")
    expect(page.get_by_text(re.compile("^Preview: Save keeps"))).to_be_visible(
        timeout=TIMEOUT_MS)
    # a whole-picture model says where it drew, instead of pretending it is full size
    expect(page.locator("figure.result figcaption")).to_contain_text("Drawn at 16 × 16")
    after = page.get_by_role("img", name=re.compile("^After:"))
    page.get_by_label(re.compile("drop a reference picture")).set_input_files(
        folder / "striped" / "shape-0002.png")
    expect(after).to_have_attribute("data-style", re.compile("^ref:"), timeout=TIMEOUT_MS)
    before = _img_digest(page, after)
    page.get_by_label(re.compile("^Strength")).fill("0.3")
    page.wait_for_function("() => document.querySelector('.result img').alt.includes('0.3')")
    assert _img_digest(page, after) != before
    expect(page.get_by_label("Size", exact=True)).to_be_hidden()  # it draws at 16 x 16
    expect(page.locator(".fullsize")).to_contain_text("draws whole pictures at 16 × 16")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".fullsize .status")).to_contain_text(
        re.compile(r"Saved 16 × 16 px, drawn at 16 × 16.* gallery image \d+"),
        timeout=TIMEOUT_MS)
    _shot(page, "restyle-reference-desktop")

    # -- Blend: moving a slider changes the image; animate renders a GIF --------------------
    _go(page, live, "blend")
    _assert_labelled(page)
    page.get_by_label("Model", exact=True).select_option("shapes-dcgan")
    result = page.get_by_role("img", name=re.compile("^Blend:"))
    expect(result).to_have_attribute("src", re.compile("^blob:"), timeout=TIMEOUT_MS)
    first = _img_digest(page, result)
    src = result.get_attribute("src")
    page.get_by_label("outline").fill("0")
    page.get_by_label("flat", exact=True).fill("1")
    page.wait_for_function(f"() => document.querySelector('.result img').src !== '{src}'",
                           timeout=TIMEOUT_MS)
    expect(page.get_by_text("Saved to the gallery.")).to_be_visible(timeout=TIMEOUT_MS)
    assert _img_digest(page, result) != first
    page.get_by_role("button", name="Animate").click()
    gif = page.get_by_role("img", name="Interpolation animation")
    expect(gif).to_be_visible(timeout=TIMEOUT_MS)
    assert bytes(gif.evaluate("img => fetch(img.src).then(r => r.arrayBuffer())"
                              ".then(b => Array.from(new Uint8Array(b).slice(0, 6)))")) == b"GIF89a"
    _shot(page, "blend-desktop")

    # -- Gallery: newest first, filter, open, download, regenerate --------------------------
    _go(page, live, "gallery")
    _assert_labelled(page)
    thumbs = page.locator("button.thumb")
    expect(thumbs.first).to_be_visible()
    assert thumbs.count() >= 6  # 4 generated, 1 saved restyle, 1 saved blend (at least)
    total = thumbs.count()
    page.get_by_label("Model").select_option("shapes-dcgan")
    expect(thumbs).not_to_have_count(total)  # the restyles of "sg" are filtered out
    expect(thumbs.first).to_be_visible()
    assert all(t.get_attribute("title").startswith("shapes-dcgan") for t in thumbs.all())
    ids = [int(t.get_attribute("data-id")) for t in thumbs.all()]
    assert ids == sorted(ids, reverse=True) and len(ids) >= 5
    thumbs.first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("polychrome_version")
    with page.expect_download() as dl:
        dialog.get_by_role("link", name="Download").click()
    dl.value.save_as(tmp_path / "gallery.png")
    assert read_png_metadata(tmp_path / "gallery.png")["model"] == "shapes-dcgan"
    dialog.get_by_role("button", name="Regenerate").click()
    expect(dialog).to_contain_text("identical, pixel for pixel", timeout=TIMEOUT_MS)
    _shot(page, "gallery-desktop")
    dialog.get_by_role("button", name="Close").click()

    # -- every page at phone width ------------------------------------------------------------
    page.set_viewport_size(PHONE)
    for name in PAGES:
        _go(page, live, name)
        expect(page.locator("main h1")).to_be_visible()
        overflow = page.evaluate("() => document.documentElement.scrollWidth - innerWidth")
        assert overflow <= 1, f"{name} is wider than a phone screen by {overflow}px"
        _shot(page, f"{name}-phone")
    page.set_viewport_size(DESKTOP)


def _photo(path: Path, width: int, height: int) -> Path:
    """A smooth, non-square picture (a gradient with discs), like a small photo."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([80 + 150 * x / width, 60 + 120 * y / height,
                    200 - 100 * x / width], axis=-1)
    for cx, cy, r, colour in ((0.3, 0.5, 0.25, (240, 200, 60)), (0.72, 0.4, 0.18,
                                                                  (40, 90, 160))):
        disc = (x - cx * width) ** 2 + (y - cy * height) ** 2 < (r * height) ** 2
        img[disc] = colour
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path)
    return path


def test_native_restyle_saves_the_full_size(page, live, tmp_path):
    """A model trained on crops: styles switch on a <= 512 px preview; Save and Download
    full size render the same style at the picture's own size (or the size chosen)."""
    from playwright.sync_api import expect

    photo = _photo(tmp_path / "wide.png", 640, 400)
    _go(page, live, "restyle")
    page.get_by_label("Model").select_option("photo-nat")
    page.get_by_label(re.compile("Drop a picture here")).set_input_files(photo)
    caption = page.locator("figure.result figcaption")
    expect(caption).to_contain_text("Preview 512 × 320 of 640 × 400", timeout=TIMEOUT_MS)
    after = page.get_by_role("img", name=re.compile("^After:"))
    first = _img_digest(page, after)
    page.get_by_role("button", name="striped", exact=True).click()  # switch the style
    expect(after).to_have_attribute("data-style", "striped", timeout=TIMEOUT_MS)
    page.wait_for_function("() => document.querySelector('.result img').alt.includes"
                           "('striped')")
    assert _img_digest(page, after) != first
    sizes = page.get_by_label("Size", exact=True)
    assert sizes.locator("option").all_inner_texts() == [
        "Native (640 × 400)", "2048 (2048 × 1280)", "1024 (1024 × 640)", "512 (512 × 320)"]

    page.get_by_role("button", name="Save", exact=True).click()
    note = page.locator(".fullsize .status")
    expect(note).to_contain_text(re.compile(r"Saved 640 × 400 px, 1 tile — gallery image \d+"),
                                 timeout=TIMEOUT_MS)
    image_id = int(re.search(r"gallery image (\d+)", note.inner_text()).group(1))
    with live.client() as c:
        info = c.get(f"/api/images/{image_id}").json()
    assert (info["width"], info["height"]) == (640, 400) and info["model"] == "photo-nat"
    assert info["metadata"]["size"] == "native" and info["metadata"]["tiles"] == "1"
    assert info["metadata"]["style"] == "striped"
    _shot(page, "restyle-desktop")

    sizes.select_option("512")
    with page.expect_download(timeout=TIMEOUT_MS) as dl:
        page.get_by_role("button", name="Download full size").click()
    path = tmp_path / "full.png"
    dl.value.save_as(path)
    assert dl.value.suggested_filename.endswith("-512x320.png")
    with Image.open(path) as im:
        assert im.size == (512, 320)
    meta = read_png_metadata(path)
    assert meta["size"] == "512" and meta["style"] == "striped" and meta["model"] == "photo-nat"
    expect(note).to_contain_text("Saved 512 × 320 px")
    page.set_viewport_size(PHONE)
    overflow = page.evaluate("() => document.documentElement.scrollWidth - innerWidth")
    assert overflow <= 1, f"the full-size controls are wider than a phone by {overflow}px"
    _shot(page, "restyle-native-phone")
    page.set_viewport_size(DESKTOP)

    # Blend: the same preview / full-size split; the animation runs at the preview's size
    _go(page, live, "blend")
    page.get_by_label("Model", exact=True).select_option("photo-nat")
    page.get_by_label(re.compile("Drop the picture to restyle")).set_input_files(photo)
    expect(page.locator("figure.result figcaption")).to_contain_text(
        "Preview 512 × 320 of 640 × 400", timeout=TIMEOUT_MS)
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".fullsize .status")).to_contain_text("Saved 640 × 400 px, 1 tile",
                                                              timeout=TIMEOUT_MS)
    page.get_by_label("Frames").fill("2")
    page.get_by_role("button", name="Animate").click()
    gif = page.get_by_role("img", name="Interpolation animation")
    expect(gif).to_be_visible(timeout=TIMEOUT_MS)
    assert gif.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [512, 320]


def test_bad_uploads_show_a_clear_message(page, live, tmp_path):
    from playwright.sync_api import expect

    good = tmp_path / "good.png"
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(good)
    bad = tmp_path / "broken.png"
    bad.write_bytes(good.read_bytes()[:50])
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n" * 20)

    _go(page, live, "datasets")
    page.get_by_label("Name").fill("broken")
    page.get_by_label(re.compile("choose image files")).set_input_files([good, bad, notes])
    page.get_by_role("button", name="Upload and import").click()
    alert = page.locator("form .error")
    expect(alert).to_contain_text("rejected by the image decoder")
    expect(alert).to_contain_text("broken.png")
    expect(alert).to_contain_text("notes.txt")
    _shot(page, "datasets-error-desktop")

    _go(page, live, "restyle")
    page.get_by_label("Model").select_option("sg")
    page.get_by_label(re.compile("Drop a picture here")).set_input_files(bad)
    expect(page.get_by_role("alert").filter(has_text="broken.png")).to_contain_text(
        "image 'broken.png'")


def test_the_page_and_its_keyboard_basics(page, live):
    from playwright.sync_api import expect

    _go(page, live, "create")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent") == "Skip to content"
    page.get_by_role("link", name="Train").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Train", level=1)).to_be_visible()
    assert page.get_by_role("link", name="Train").get_attribute("aria-current") == "page"
    for name in PAGES:
        _go(page, live, name)
        _assert_labelled(page)


def test_api_key_field(browser_ctx, tmp_path_factory):
    """With POLYCHROME_API_KEYS set, the page asks for the key, keeps it, and then works
    (images too: they are fetched with the key header)."""
    from playwright.sync_api import expect

    from serving.live import start_server

    home = tmp_path_factory.mktemp("keyed") / "home"
    home.mkdir()
    _register_stargan(home)
    server = start_server(home, workers=0, env={"POLYCHROME_API_KEYS": "sesame"})
    pg = browser_ctx.new_page()
    try:
        pg.goto(f"{server.url}/#/models")
        banner = pg.locator("#banner")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("an API key is required")
        pg.get_by_label("API key (kept in this browser only)").fill("sesame")
        pg.get_by_role("button", name="Save key").click()
        expect(pg.locator("article.model")).to_have_count(1)
        expect(banner).to_be_hidden()
        pg.get_by_role("button", name="Details").click()
        expect(pg.locator(".model-card")).to_contain_text("sg")
        pg.reload()  # the key survives a reload (localStorage)
        expect(pg.locator("article.model")).to_have_count(1)
    finally:
        pg.evaluate("() => localStorage.clear()")
        pg.close()
        server.stop()
