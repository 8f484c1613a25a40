"""Translation trainers (stargan, cyclegan) on the shared loop: tiny end-to-end runs."""

from __future__ import annotations

import json

import pytest
import torch

from polychrome.data.cache import PackedDataset
from polychrome.errors import PolychromeError
from polychrome.models import GANModel, create_model
from polychrome.models.zoo.cyclegan import CycleGAN
from polychrome.models.zoo.stargan import StarGAN
from polychrome.training import TrainConfig, export_model, train
from polychrome.training.checkpoint import find_checkpoint, load_checkpoint
from polychrome.training.trainers import get_trainer_class
from polychrome.training.trainers.cyclegan import CycleGANTrainer, ImagePool
from polychrome.training.trainers.stargan import StarGANTrainer, StyleBatchLoader

R = 16
MODEL_CONFIGS = {
    "stargan": dict(width=8, max_width=16, style_dim=8, latent_dim=4, mapping_dim=16,
                    mapping_shared_layers=2, mapping_head_layers=2, e_width=8, e_max_width=16,
                    d_width=8, d_max_width=16),
    "cyclegan": dict(width=8, n_blocks=2, d_width=8),
}
STYLES = {"stargan": 3, "cyclegan": 2}


def make_packed(n: int = 24, styles: int = 3, *, aligned: bool = False) -> PackedDataset:
    """Procedural images: a colour per style plus noise. Pixel (0, 0, 0) holds the row index.

    `aligned`: rows i, i+1, ... i+styles-1 share a file name (one subject in every style).
    """
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % styles
    base = torch.tensor([[40, 40, 200], [220, 60, 40], [30, 180, 30]])[labels % 3]
    images = (base[:, :, None, None] + torch.randint(0, 50, (n, 3, R, R), generator=g))
    images = images.clamp(0, 255).to(torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    files = [f"images/s{int(y)}/img-{i // styles if aligned else i:04d}.png"
             for i, y in enumerate(labels)]
    return PackedDataset(images=images, labels=labels, domains=[f"s{k}" for k in range(styles)],
                         files=files, resolution=R)


def tiny_config(model: str, **kw) -> TrainConfig:
    base = dict(model=model, model_config=MODEL_CONFIGS[model], dataset="toy", resolution=R,
                steps=4, batch_size=4, checkpoint_every=2, sample_every=2, log_every=1, seed=0,
                sample_cols=4)
    base.update(kw)
    return TrainConfig(**base)


def _final_tensors(run_dir) -> dict[str, torch.Tensor]:
    return load_checkpoint(find_checkpoint(run_dir, "latest"))[0]


def _final_state(run_dir) -> dict:
    return load_checkpoint(find_checkpoint(run_dir, "latest"))[1]


def _stop_after(n: int):
    calls = {"n": 0}

    def should_stop() -> bool:  # polled before every step
        calls["n"] += 1
        return calls["n"] > n

    return should_stop


@pytest.mark.parametrize("name", ["stargan", "cyclegan"])
def test_train_resume_exact_and_export(name, tmp_path):
    packed = make_packed(styles=STYLES[name])
    cfg = tiny_config(name)
    straight = train(cfg, packed=packed, run_dir=tmp_path / "straight", tensorboard=False)
    assert straight.step == 4 and not straight.stopped
    assert all(isinstance(v, float) and v == v for v in straight.final.values())

    # The same run, cancelled after 2 steps and resumed, ends bit-identical.
    half = train(cfg, packed=packed, run_dir=tmp_path / "split", tensorboard=False,
                 should_stop=_stop_after(2))
    assert half.stopped and half.step == 2
    resumed = train(resume=tmp_path / "split", packed=packed, tensorboard=False)
    assert resumed.step == 4
    a, b = _final_tensors(tmp_path / "straight"), _final_tensors(tmp_path / "split")
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, differ[:5]

    # Training moved every network away from its initial weights.
    torch.manual_seed(cfg.seed)
    init = create_model(name, resolution=R, num_domains=STYLES[name], **MODEL_CONFIGS[name])
    for net_name, net in init.named_children():
        moved = any(not torch.equal(v, a[f"model.{net_name}.{k}"])
                    for k, v in net.state_dict().items())
        assert moved, f"{net_name} did not train"

    # A sample grid per sample_every, and the exported model translates.
    samples = sorted(p.name for p in (tmp_path / "straight" / "samples").glob("*.png"))
    assert samples == ["step-000000.png", "step-000002.png", "step-000004.png"]
    out = export_model(tmp_path / "straight", tmp_path / "exported")
    model = GANModel.from_pretrained(out).eval()
    assert model.loaded_modules == model.inference_modules
    assert model.style_names == packed.domains
    x = packed.images[:2].float() / 127.5 - 1
    with torch.no_grad():
        y = model.translate(x, 1)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_stargan_run_details(tmp_path):
    packed = make_packed(styles=3)
    run = train(tiny_config("stargan", steps=2, checkpoint_every=0, sample_every=0),
                packed=packed, run_dir=tmp_path / "run", tensorboard=False)
    for key in ("loss_d", "loss_g", "sty", "ds", "cyc", "ref_loss_g", "ref_cyc", "lambda_ds"):
        assert key in run.final, key
    state = _final_state(run.run_dir)
    assert set(state["optimizers"]) == {"g", "f", "e", "d"}
    assert state["base_lrs"]["f"] == pytest.approx(1e-6)  # the paper's small mapping lr
    groups = state["optimizers"]["g"]["param_groups"][0]
    assert groups["weight_decay"] == pytest.approx(1e-4) and groups["betas"] == [0.0, 0.99]
    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [ln["losses"] for ln in lines if "losses" in ln]
    assert [ln["lambda_ds"] for ln in losses] == pytest.approx([1.0, 0.5])  # linear decay
    # Lazy R1 by default: on the first D update, then every 16th.
    assert "r1" in losses[0] and "r1" not in losses[1]


def test_stargan_batched_step_computes_the_four_update_schedules_first_terms(tmp_path):
    """At step 0 both schedules start from the same weights and inputs: the terms that
    do not depend on an earlier update of the step must agree (the latent branch's D
    loss on the fakes the G update reuses, its style, diversity and cycle terms)."""
    packed = make_packed(styles=3)
    runs = {}
    for batched in (True, False):
        runs[batched] = train(tiny_config("stargan", steps=1, checkpoint_every=0,
                                          sample_every=0, r1_interval=1,
                                          trainer_options={"batched": batched}),
                              packed=packed, run_dir=tmp_path / str(batched),
                              tensorboard=False).final
    for key in ("loss_d", "d_real", "d_fake", "r1", "sty", "ds", "cyc"):
        assert runs[True][key] == pytest.approx(runs[False][key], rel=1e-4, abs=1e-6), key
    # The reference branch's D loss sees the same D in the batched schedule (one update),
    # an updated one in the four-update schedule.
    assert runs[True]["ref_d_real"] == pytest.approx(runs[True]["d_real"], rel=1e-6)
    assert runs[False]["ref_d_real"] != pytest.approx(runs[False]["d_real"], rel=1e-6)


@pytest.mark.parametrize("options", [{"lambda_id": 1.0},
                                     {"lambda_pair": 5.0, "lambda_cyc": 0.0}])
def test_stargan_batched_lazy_r1_resumes_exactly(options, tmp_path):
    """Lazy R1 due on both sides of the cut (steps 0 and 2) and every optional term: a
    run stopped after 2 steps and resumed ends bit-identical to a straight one."""
    packed = make_packed(n=24, styles=3, aligned=True)
    cfg = tiny_config("stargan", steps=4, checkpoint_every=0, sample_every=0,
                      r1_interval=2, trainer_options=options)
    straight = train(cfg, packed=packed, run_dir=tmp_path / "straight", tensorboard=False)
    assert all(v == v for v in straight.final.values())
    half = train(cfg, packed=packed, run_dir=tmp_path / "split", tensorboard=False,
                 should_stop=_stop_after(2))
    train(resume=half.run_dir, packed=packed, tensorboard=False)
    a, b = _final_tensors(tmp_path / "straight"), _final_tensors(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cyclegan_rejects_three_styles(tmp_path):
    with pytest.raises(PolychromeError, match="exactly 2"):
        train(tiny_config("cyclegan"), packed=make_packed(styles=3), run_dir=tmp_path / "r",
              tensorboard=False)


def test_cyclegan_lr_decay_and_pool_in_checkpoint(tmp_path):
    run = train(tiny_config("cyclegan", steps=4, checkpoint_every=0, sample_every=0),
                packed=make_packed(styles=2), run_dir=tmp_path / "run", tensorboard=False)
    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    factors = [ln["losses"]["lr_factor"] for ln in lines if "losses" in ln]
    assert factors == pytest.approx([1.0, 1.0, 1.0, 0.5])  # constant, then linear to 0
    tensors = _final_tensors(run.run_dir)
    # 4 steps x batch 4 fakes per style, capped by pool_size 50: 16 remembered each.
    assert tensors["trainer.pool_a"].shape == (16, 3, R, R)
    assert tensors["trainer.pool_b"].shape == (16, 3, R, R)


def test_trainer_registry_dispatches_by_model():
    assert get_trainer_class("translation").__name__ == "TranslationTrainer"
    assert issubclass(StarGANTrainer, get_trainer_class("translation"))
    assert issubclass(CycleGANTrainer, get_trainer_class("translation"))
    assert StarGAN.family == CycleGAN.family == "translation"


def test_style_batches_pair_references_within_a_style():
    packed = make_packed(n=30, styles=3)
    loader = StyleBatchLoader(packed, 5, device=torch.device("cpu"), seed=3)
    it = loader.forever()
    next(it)
    state = loader.state_dict()
    batch = next(it)
    x, y, x_ref, x_ref2, y_ref = batch[:5]
    assert batch.x_pair is None and batch.has_pair is None  # only when asked for

    assert torch.equal(packed.labels[_rows(x)], y)
    assert torch.equal(packed.labels[_rows(x_ref)], y_ref)
    assert torch.equal(packed.labels[_rows(x_ref2)], y_ref)  # same style as the reference
    # The state pins the next batch exactly (both loaders and the partner choice).
    again = StyleBatchLoader(packed, 5, device=torch.device("cpu"), seed=3)
    again.load_state_dict(state)
    for t1, t2 in zip(batch[:5], next(again.forever())[:5], strict=True):
        assert torch.equal(t1, t2)


def _rows(imgs: torch.Tensor) -> torch.Tensor:  # undo to_float on the index pixel
    return ((imgs[:, 0, 0, 0] + 1) * 127.5).round().long()


def test_style_batches_bring_the_ground_truth_drawing_when_paired():
    packed = make_packed(n=30, styles=3, aligned=True)
    packed = packed.subset([i for i in range(30) if i != 7])  # subject 2 lacks style 1
    loader = StyleBatchLoader(packed, 8, device=torch.device("cpu"), seed=5, paired=True)
    seen_missing = 0
    for _, b in zip(range(12), loader.forever(), strict=False):
        src_files = [packed.files[int(r)] for r in packed_rows(packed, b.x)]
        for i, f in enumerate(src_files):
            want = f"images/s{int(b.y_trg[i])}/{f.rsplit('/', 1)[1]}"
            if want in packed.files:
                assert bool(b.has_pair[i])
                assert packed.files[int(packed_rows(packed, b.x_pair[i:i + 1])[0])] == want
            else:
                seen_missing += 1
                assert not bool(b.has_pair[i])
    assert seen_missing > 0  # the gap was drawn and masked
    lone = make_packed(n=12, styles=3)  # every file name unique: nothing to pair
    with pytest.raises(PolychromeError, match="share file names"):
        StyleBatchLoader(lone, 4, device=torch.device("cpu"), seed=0, paired=True)


def packed_rows(packed: PackedDataset, imgs: torch.Tensor) -> torch.Tensor:
    """Rows of `packed` holding these images (the index pixel names the original row)."""
    index_pixel = packed.images[:, 0, 0, 0].long()
    return torch.stack([torch.nonzero(index_pixel == r).flatten()[0] for r in _rows(imgs)])


def test_image_pool_fills_then_mixes():
    pool = ImagePool(4)
    g = torch.Generator().manual_seed(0)
    first = torch.arange(4.0).reshape(4, 1, 1, 1)
    assert torch.equal(pool.query(first, g), first)  # filling: new images pass through
    new = torch.arange(10.0, 110.0).reshape(100, 1, 1, 1)
    shown = pool.query(new, g)
    assert shown.shape == new.shape
    old_shown = (shown != new).flatten()
    assert 25 < int(old_shown.sum()) < 75  # about half come from the history
    assert pool.images.shape[0] == 4
    off = ImagePool(0)
    assert torch.equal(off.query(new, g), new)


@pytest.mark.parametrize("recipe_name, logged", [("emoji-stargan", "id"),
                                                  ("emoji-stargan-paired", "pair")])
def test_stargan_recipes_train_and_resume_exactly(recipe_name, logged, tmp_path):
    """The shipped recipes' options (skips, lazy R1, lambda_pair / lambda_id, ...) load,
    train on aligned style folders and resume bit for bit."""
    from pathlib import Path

    from polychrome.training import load_yaml_config

    recipe = load_yaml_config(Path(__file__).parents[2] / "scripts" / "defaults"
                              / f"{recipe_name}.yaml")
    assert recipe["model_config"]["skips"] > 0 and recipe["trainer_options"][f"lambda_{logged}"] > 0
    packed = make_packed(styles=3, aligned=True)
    cfg = tiny_config("stargan", steps=4, checkpoint_every=0, sample_every=0,
                      model_config={**MODEL_CONFIGS["stargan"], **recipe["model_config"]},
                      trainer_options=recipe["trainer_options"],
                      **{k: recipe[k] for k in ("lr_g", "lr_d", "r1_interval") if k in recipe})
    straight = train(cfg, packed=packed, run_dir=tmp_path / "straight", tensorboard=False)
    assert straight.final[logged] > 0  # the recipe's extra term is computed and logged
    half = train(cfg, packed=packed, run_dir=tmp_path / "split", tensorboard=False,
                 should_stop=_stop_after(2))
    train(resume=half.run_dir, packed=packed, tensorboard=False)
    a, b = _final_tensors(tmp_path / "straight"), _final_tensors(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_stargan_paper_objective_by_default(tmp_path):
    off = train(tiny_config("stargan", steps=1, checkpoint_every=0, sample_every=0),
                packed=make_packed(styles=3), run_dir=tmp_path / "off", tensorboard=False)
    assert off.final["id"] == 0.0 and off.final["pair"] == 0.0 and off.final["cyc"] > 0


def test_stargan_paired_loss_trains_resumes_and_needs_shared_names(tmp_path):
    packed = make_packed(n=24, styles=3, aligned=True)
    cfg = tiny_config("stargan", steps=4, checkpoint_every=0, sample_every=0,
                      trainer_options={"lambda_pair": 10.0, "lambda_cyc": 0.0})
    straight = train(cfg, packed=packed, run_dir=tmp_path / "straight", tensorboard=False)
    assert straight.final["pair"] > 0 and straight.final["ref_pair"] > 0
    assert straight.final["cyc"] == 0.0  # a zero-weight term is skipped
    half = train(cfg, packed=packed, run_dir=tmp_path / "split", tensorboard=False,
                 should_stop=_stop_after(2))
    train(resume=half.run_dir, packed=packed, tensorboard=False)
    a, b = _final_tensors(tmp_path / "straight"), _final_tensors(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(PolychromeError, match="share file names"):
        train(cfg, packed=make_packed(n=24, styles=3), run_dir=tmp_path / "lone",
              tensorboard=False)


@pytest.mark.parametrize("name", ["stargan", "cyclegan"])
def test_crops_mode_trains_resumes_exactly_and_records_fit(name, tmp_path):
    """Random crops of pictures at their own size: same loop, exact resume, and the
    exported model says it was trained on crops (so pipelines run it at native size)."""
    from data.test_crops import make_sized_dataset
    from polychrome.data.crops import load_crops_dir

    domains = ("ink", "neon", "wash")[:STYLES[name]]
    packed = load_crops_dir(make_sized_dataset(tmp_path / "d" / "1", domains=domains), R,
                            (R, 48))
    cfg = tiny_config(name, fit="crops", scale=[R, 48], batch_size=2, sample_cols=2)
    assert cfg.fit == "crops"
    straight = train(cfg, packed=packed, run_dir=tmp_path / "straight", tensorboard=False)
    half = train(cfg, packed=packed, run_dir=tmp_path / "split", tensorboard=False,
                 should_stop=_stop_after(2))
    assert half.stopped
    train(resume=tmp_path / "split", packed=packed, tensorboard=False)
    a, b = _final_tensors(tmp_path / "straight"), _final_tensors(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a) and straight.step == 4
    model = GANModel.from_pretrained(export_model(tmp_path / "straight", tmp_path / "out"))
    assert model.meta["fit"] == "crops" and model.meta["crop"] == R
    assert model.meta["scale"] == [R, 48]


def test_crop_option_sets_crops_mode():
    cfg = TrainConfig.from_dict({"model": "stargan", "dataset": "x", "crop": 64})
    assert (cfg.fit, cfg.resolution) == ("crops", 64)
    with pytest.raises(PolychromeError, match="crops"):
        TrainConfig.from_dict({"model": "stargan", "dataset": "x", "crop": 64, "fit": "pad"})
    with pytest.raises(PolychromeError, match="scale"):
        TrainConfig.from_dict({"model": "stargan", "dataset": "x", "scale": [64, 128]})
