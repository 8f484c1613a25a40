"""Translation metrics: SSIM, paired errors vs the identity baseline, and `polychrome eval`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from polychrome.cli.main import main
from polychrome.errors import ConfigError
from polychrome.metrics.evaluator import train_evaluator
from polychrome.metrics.translation import (
    paired_rows,
    ssim,
    style_mapping,
    training_split,
    translation_metrics,
)
from polychrome.models import create_model
from polychrome.persistence.models import add_model_version, show_model

from .toydata import toy_packed

pytestmark = pytest.mark.usefixtures("one_thread")


def test_ssim_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 16, 16, generator=g)
    assert torch.equal(ssim(x, x), torch.ones(3, dtype=torch.float64))
    y = (x + 0.2 * torch.rand(3, 3, 16, 16, generator=g)).clamp(0, 1)
    s = ssim(x, y)
    assert torch.all(s < 1) and torch.all(s > 0)
    assert torch.allclose(s, ssim(y, x))
    # constant images: SSIM reduces to the luminance term (2 mx my + c1) / (mx^2 + my^2 + c1)
    a, b = torch.full((1, 1, 12, 12), 0.2), torch.full((1, 1, 12, 12), 0.6)
    c1 = 0.01**2
    assert float(ssim(a, b)) == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.04 + 0.36 + c1))
    assert float(ssim(1 - x[:1], x[:1])) < 0  # inverted structure: negative


class Identity:
    """A translator that returns its input: paired error must equal the identity baseline."""

    def latent(self, x, y, seed):
        return x

    def reference(self, x, ref, y):
        return x


class Perfect:
    """Returns the real drawing of the same stem in the target style (knows the dataset)."""

    def __init__(self, packed):
        self.lookup = {}
        by_stem: dict[str, dict[int, torch.Tensor]] = {}
        for img, label, f in zip(packed.images, packed.labels.tolist(), packed.files,
                                 strict=True):
            by_stem.setdefault(Path(f).stem, {})[label] = img
        for img, f in zip(packed.images, packed.files, strict=True):
            self.lookup[img.numpy().tobytes()] = by_stem[Path(f).stem]

    def latent(self, x, y, seed):
        u8 = x.add(1).mul(127.5).round().to(torch.uint8)
        rows = [self.lookup[u.numpy().tobytes()][int(t)] for u, t in zip(u8, y, strict=True)]
        return torch.stack(rows).float().div(127.5).sub(1)

    def reference(self, x, ref, y):
        return self.latent(x, y, 0)


@pytest.fixture(scope="module")
def packed_and_evaluator():
    packed = toy_packed(n_per_style=24, size=16)
    return packed, train_evaluator(packed, steps=30, batch_size=16, progress=False)


def test_identity_and_perfect_translators(packed_and_evaluator):
    packed, ev = packed_and_evaluator
    pairs = paired_rows(packed.split("heldout"), style_mapping(packed.domains, packed.domains))
    assert pairs and len(pairs) % 6 == 0  # 3 styles: 6 ordered pairs per held-out stem

    ident = translation_metrics(Identity(), packed, ev)
    for key in ("l1", "ssim", "feat"):
        assert ident[f"paired_{key}"] == ident[f"identity_{key}"]
        assert ident[f"paired_{key}_ref"] == ident[f"identity_{key}"]
    assert ident["identity_l1"] > 0.1 and ident["identity_ssim"] < 0.9
    assert ident["diversity_l1"] == 0 and ident["diversity_feat"] == 0
    assert ident["style_accuracy"] == ident["identity_style_accuracy"]
    assert ident["n_pairs"] == len(pairs) == ident["n_ref_pairs"]
    assert set(ident["fid_per_style"]) == set(packed.domains)

    perfect = translation_metrics(Perfect(packed), packed, ev)
    assert perfect["paired_l1"] == 0 and perfect["paired_feat"] == 0
    assert perfect["paired_ssim"] == pytest.approx(1.0, abs=1e-12)
    held = packed.split("heldout")
    targets = held.images[[b for _, b in pairs]]
    assert perfect["style_accuracy"] == pytest.approx(
        ev.style_accuracy(targets, held.labels[[b for _, b in pairs]]))
    assert perfect["identity_l1"] == ident["identity_l1"]  # the baseline ignores the model
    per_style = perfect["style_accuracy_per_style"]
    assert set(per_style) == set(packed.domains)
    for d, name in enumerate(packed.domains):
        rows = [b for _, b in pairs if int(held.labels[b]) == d]
        assert per_style[name] == pytest.approx(
            ev.style_accuracy(held.images[rows], held.labels[rows]))


def test_unmatched_styles_are_refused(packed_and_evaluator):
    packed, ev = packed_and_evaluator
    with pytest.raises(ConfigError, match="do not match"):
        translation_metrics(Identity(), packed, ev, model_styles=["cats", "dogs"])


def test_cli_eval_reports_translation_metrics(shapes_dataset: Path, tmp_path: Path, capsys):
    styles = ["flat", "outline", "shadow", "striped"]
    torch.manual_seed(0)
    model = create_model("stargan", resolution=16, num_domains=4, width=8, max_width=16,
                         style_dim=8, latent_dim=4, mapping_dim=16, mapping_shared_layers=2,
                         mapping_head_layers=2, e_width=8, e_max_width=16, d_width=8,
                         d_max_width=16)
    model.save_pretrained(tmp_path / "m", modules=model.inference_modules,
                          meta={"styles": styles, "dataset": "shapes:1"})
    add_model_version(tmp_path / "m", "toy-star")
    code = main(["eval", "toy-star", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    t = result["translation"]
    assert result["split"] == "heldout" and result["extractor"] == "offline:shapes@v1/16"
    assert result["instrument"]["usable"]  # measured in the same run, beside the figures
    assert set(t["fid_context_per_style"]) == set(styles) == set(t["style_accuracy_per_style"])
    for s, ctx in t["fid_context_per_style"].items():
        assert ctx["fid_ceiling"] > ctx["fid_floor"] > 0
        assert ctx["fid_position"] == pytest.approx(
            (t["fid_per_style"][s] - ctx["fid_floor"]) / (ctx["fid_ceiling"] - ctx["fid_floor"]))
    for key in ("paired_l1", "identity_l1", "paired_ssim", "identity_ssim", "paired_feat",
                "identity_feat", "style_accuracy", "diversity_l1", "diversity_feat",
                "fid_per_style", "n_pairs"):
        assert key in t
    assert 0 <= t["paired_l1"] <= 1 and t["n_pairs"] > 0 and t["diversity_l1"] > 0
    assert 0 <= t["style_accuracy"] <= 1
    assert result.get("recorded") is True
    card = show_model("toy-star")
    row = card["metrics"][f"{result['extractor']} translation"]
    assert row["evaluator_accuracy"] == result["instrument"]["accuracy"]["accuracy"]
    assert {f"fid_position[{s}]" for s in styles} <= set(row)
    assert {f"style_accuracy[{s}]" for s in styles} <= set(row)
    code = main(["eval", "toy-star"])  # the text report
    out, _ = capsys.readouterr()
    assert code == 0 and "identity baseline" in out and "FID [striped]" in out
    assert "position" in out and "held-out accuracy" in out


def test_training_split_is_read_from_the_run(polychrome_home: Path):
    model = create_model("cyclegan", resolution=16, width=8, n_blocks=1, d_width=8)
    assert training_split(model) is None  # no run recorded
    run = polychrome_home / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("model: cyclegan\nsplit: all\n")
    model.meta["run"] = "r1"
    assert training_split(model) == "all"  # eval warns: held-out stems were trained on
