"""README.md and the bundled model cards quote only figures rendered from committed outputs
(scripts/render_docs.py): the committed blocks are their rendering, and the renderer
notices a block that drifts from its source."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import render_docs  # noqa: E402


def test_committed_docs_are_their_sources_rendered(capsys):
    """Fails when a README / card figure differs from the JSON it is rendered from: re-run
    `python scripts/render_docs.py` after a benchmark writes new figures."""
    assert render_docs.main(["--check"]) == 0, capsys.readouterr().err


def test_every_source_names_its_run():
    """Each benchmark JSON a block renders says what made it (command, commit, machine)."""
    for name in ("restoration.json", "load.json", "scale_out.json", "photo_quality.json",
                 "native_size.json", "emoji_sr.json", "style_switch.json",
                 "seed_diversity.json", "seed_diversity_emoji_other.json",
                 "seed_diversity_photo.json", "compression.json"):
        report = render_docs.quality(name)
        assert report["command"].startswith("python benchmarks/"), name
        assert report["commit"] and report["machine"]["cores"] >= 1, name
    runs = render_docs.quality("training_runs.json")
    assert runs["command"].startswith("python scripts/") and \
        runs["commit"]
    for name, rec in runs["runs"].items():
        step = render_docs.model_config(name)["meta"]["step"]
        assert rec["checkpoint_step"] == step, name
        assert rec["completed"] == (step >= rec["planned_steps"]), name


def test_card_states_the_run_record():
    """A card says whether its run completed, from the record, and claims no machine the
    run did not record; a model whose run was not kept says so instead of guessing."""
    sr = "\n".join(render_docs.card_run("photo-sr"))
    assert "4200-step schedule" in sr and "it completed its schedule" in sr
    assert "machine: not recorded by the run" in sr and "stopped" not in sr
    styles = "\n".join(render_docs.card_run("photo-styles"))
    assert "stopped before the end of its schedule" in styles
    stylegan = "\n".join(render_docs.card_run("emoji-stylegan"))
    assert "step 9060" in stylegan and "was not kept" in stylegan
    for card in render_docs.ASSETS.glob("*/card.md"):
        assert "shared 2-core CPU" not in card.read_text(), card.parent.name


def test_a_figure_that_drifts_is_caught(tmp_path, monkeypatch):
    """Edit one figure in a copy of a source JSON: `--check` fails and names the block;
    rendering writes the new figure; a block whose markers are gone is an error."""
    quality = tmp_path / "quality"
    shutil.copytree(render_docs.QUALITY, quality)
    readme = tmp_path / "README.md"
    readme.write_text(render_docs.README.read_text())
    report = json.loads((quality / "style_switch.json").read_text())
    report["runs"][0]["p50_s"]["switch"] = 0.0123
    (quality / "style_switch.json").write_text(json.dumps(report))
    monkeypatch.setattr(render_docs, "QUALITY", quality)
    monkeypatch.setattr(render_docs, "README", readme)
    only = [b for b in render_docs.blocks() if b.path == readme]
    files = render_docs.render_all(only)
    old, new, changed = files[readme]
    assert changed == ["style-switch"] and "12.3 ms" in new and "12.3 ms" not in old
    readme.write_text(old.replace("<!-- /style-switch-figures -->", ""))
    with pytest.raises(render_docs.DocsError, match="style-switch-figures block"):
        render_docs.render_all(only)


def test_metrics_render_every_key_generically():
    """Cards render whatever keys metrics.json holds (nested ones as dotted names)."""
    rows = dict(render_docs.flatten({"fid": 3.5, "evaluator": {"accuracy": 0.9,
                                                                "floor": {"fid": 0.1}}}))
    assert rows == {"evaluator.accuracy": 0.9, "evaluator.floor.fid": 0.1, "fid": 3.5}
    metrics = render_docs.model_metrics("emoji-stylegan")
    lines = render_docs.card_metrics("emoji-stylegan")
    keys = {k for k, _ in render_docs.flatten(metrics)}
    table = [ln for ln in lines if ln.startswith("| ")]
    assert len(table) == 1 + len(keys) and all(f"| {k} |" in "\n".join(table) for k in keys)
    # Figures without the evaluator's own quality say so; with it, they do not.
    assert render_docs.instrument_recorded({"offline": {"fid": 3.0, "fid_floor": 0.2}})
    assert not render_docs.instrument_recorded({"fid": 3.0, "n": 10})
    note = "no evaluator accuracy, FID floor or ceiling was recorded"
    assert (note in "\n".join(lines)) == (not render_docs.instrument_recorded(metrics))


def test_a_card_must_state_its_run(tmp_path, monkeypatch):
    """A bundled card without its run block (a hand-written run claim instead) is refused."""
    for d in render_docs.ASSETS.iterdir():
        if (d / "card.md").is_file():
            (tmp_path / d.name).mkdir()
            for f in ("card.md", "config.json", "metrics.json"):
                shutil.copy2(d / f, tmp_path / d.name / f)
    card = tmp_path / "emoji-stylegan" / "card.md"
    text = card.read_text()
    start, end = text.index("<!-- run-figures:"), text.index("<!-- /run-figures -->")
    card.write_text(text[:start] + "- training time: 76 min on a shared 2-core CPU"
                    + text[end + len("<!-- /run-figures -->"):])
    monkeypatch.setattr(render_docs, "ASSETS", tmp_path)
    with pytest.raises(render_docs.DocsError, match="emoji-stylegan/card.md has no run-figures"):
        render_docs.blocks()


def test_cards_read_without_their_markers():
    """The CLI and the page show a bundled card without the marker comments, figures kept."""
    from polychrome.persistence.models import card_for_reading

    for card in render_docs.ASSETS.glob("*/card.md"):
        text = card.read_text()
        shown = card_for_reading(text)
        assert "<!--" not in shown and "-figures" not in shown, card.parent.name
        kept = [ln for ln in text.splitlines() if ln and not ln.startswith("<!--")]
        assert [ln for ln in shown.splitlines() if ln] == kept, card.parent.name
