"""The shared loop: every noise model trains, callbacks, evaluation + best, NaN guard, monitor."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from polychrome.errors import ConfigError, TrainingError
from polychrome.models import GANModel, list_models
from polychrome.training import TrainConfig, export_model, train
from polychrome.training.checkpoint import best_checkpoint, list_checkpoints, load_checkpoint
from polychrome.training.monitor import Monitor, tile_images

from .helpers import make_packed, tiny_config


@pytest.mark.parametrize("model", list_models(family="noise"))
def test_every_noise_model_trains_with_its_defaults(tmp_path, model):
    # each model's own train_defaults (loss, n_critic, GP, R1, mixing, DiffAugment)
    cfg = tiny_config(model, steps=2, checkpoint_every=0, sample_every=0, batch_size=4)
    result = train(cfg, packed=make_packed(n=16), run_dir=tmp_path / "run", tensorboard=False)
    assert result.step == 2
    assert result.final and all(np.isfinite(v) for v in result.final.values())
    tensors, state = load_checkpoint(result.checkpoint)
    assert state["model"]["name"] == model
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


def test_callbacks_stop_and_continue(tmp_path):
    packed = make_packed()
    seen = []
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 2  # stop before the third step

    cfg = tiny_config("dcgan", steps=10, checkpoint_every=0, sample_every=0, log_every=1)
    result = train(cfg, packed=packed, run_dir=tmp_path / "run", tensorboard=False,
                   on_progress=lambda s, t, logs: seen.append((s, t, dict(logs))),
                   should_stop=should_stop)
    assert result.stopped and result.step == 2
    assert result.checkpoint.name == "step-000002"  # saved on stop, though checkpoint_every=0
    # the start (step and total before any step), then each logged step with its losses
    assert [s for s, _, _ in seen[:3]] == [0, 1, 2] and all(t == 10 for _, t, _ in seen)
    assert seen[0][2] == {} and {"loss_d", "loss_g"} <= set(seen[1][2])
    resumed = []
    done = train(resume=tmp_path / "run", packed=packed, tensorboard=False,
                 on_progress=lambda s, t, logs: resumed.append(s))
    assert done.step == 10 and not done.stopped
    assert resumed[0] == 2  # a resumed attempt starts from its checkpoint's step


def test_a_job_hears_of_its_first_step_between_log_lines(tmp_path):
    seen = []
    cfg = tiny_config("dcgan", steps=6, checkpoint_every=0, sample_every=0, log_every=4)
    train(cfg, packed=make_packed(), run_dir=tmp_path / "run", tensorboard=False,
          on_progress=lambda s, t, logs: seen.append((s, bool(logs))))
    # started, the first step (no losses yet), the log steps, the end
    assert seen == [(0, False), (1, False), (4, True), (6, True), (6, True)]


def test_periodic_evaluation_keeps_best_checkpoint(tmp_path):
    packed = make_packed()
    fids = {2: 9.0, 4: 3.0, 6: 5.0, 8: 7.0}
    steps_seen = []

    def evaluator(model_ema: GANModel, step: int) -> dict[str, float]:
        assert not model_ema.training
        steps_seen.append(step)
        return {"fid": fids[step], "kid_mean": 0.1}

    cfg = tiny_config("dcgan", steps=8, checkpoint_every=0, sample_every=0, eval_every=2,
                      keep_last=1)
    result = train(cfg, packed=packed, run_dir=tmp_path / "run", evaluator=evaluator,
                   tensorboard=False)
    assert steps_seen == [2, 4, 6, 8]
    root = tmp_path / "run" / "checkpoints"
    assert [p.name for p in list_checkpoints(root)] == ["step-000004", "step-000008"]
    assert best_checkpoint(root).name == "step-000004"
    assert result.metrics == {"fid": 7.0, "kid_mean": 0.1}
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["eval"]["fid"] for r in records if "eval" in r] == [9.0, 3.0, 5.0, 7.0]

    best = export_model(tmp_path / "run", tmp_path / "best", which="best")
    latest = export_model(tmp_path / "run", tmp_path / "latest")
    meta_best = json.loads((best / "config.json").read_text())["meta"]
    assert meta_best["step"] == 4 and meta_best["metrics"]["fid"] == 3.0
    assert meta_best["styles"] == packed.domains and meta_best["run"] == "run"
    assert meta_best["resolution"] == 16
    model = GANModel.from_pretrained(latest)
    assert model.loaded_modules == ("generator",)
    # the exported weights are the EMA ones of the checkpoint
    tensors, _ = load_checkpoint(root / "step-000008")
    for k, v in model.generator.state_dict().items():
        assert torch.equal(v, tensors[f"ema.generator.{k}"])


def test_nan_guard_stops_with_last_good_checkpoint(tmp_path):
    # an absurd learning rate blows the weights up within a few steps
    cfg = tiny_config("dcgan", steps=50, checkpoint_every=1, sample_every=0, lr_g=1e15,
                      lr_d=1e15, keep_last=50)
    with pytest.raises(TrainingError) as err:
        train(cfg, packed=make_packed(), run_dir=tmp_path / "run", tensorboard=False)
    msg = str(err.value)
    assert msg.startswith("loss became ") and "last good checkpoint: " in msg
    bad_step = int(msg.split(" at step ")[1].split()[0])
    good = msg.split("last good checkpoint: ")[1]
    kept = list_checkpoints(tmp_path / "run" / "checkpoints")
    assert bad_step >= 2 and kept and str(kept[-1]) == good
    assert kept[-1].name == f"step-{bad_step - 1:06d}"  # nothing saved at or after the bad step
    tensors, _ = load_checkpoint(good)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert records[-1]["error"] == msg


def test_monitor_files_and_sample_grid(tmp_path):
    packed = make_packed()
    cfg = tiny_config("dcgan", steps=4, checkpoint_every=2, sample_every=2, log_every=2,
                      sample_cols=5, schedule="linear", warmup_steps=1, grad_clip=0.5)
    train(cfg, packed=packed, run_dir=tmp_path / "run")
    run = tmp_path / "run"
    grids = sorted((run / "samples").glob("*.png"))
    assert [p.name for p in grids] == ["step-000000.png", "step-000002.png", "step-000004.png"]
    img = np.asarray(Image.open(grids[-1]))
    assert img.shape == (2 + 2 * 18, 2 + 5 * 18, 3)  # one row per style, 5 latents per row
    assert list((run / "events").glob("events.out.tfevents.*"))
    lines = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    logged = [r for r in lines if "losses" in r]
    assert [r["step"] for r in logged] == [2, 4]
    assert {"time", "lr", "aug_p", "img_per_sec"} <= set(logged[0])
    # linear decay after 1 warmup step over 4 steps: the lr of step index 1 and 3
    assert logged[0]["lr"]["g"] == pytest.approx(2e-4)
    assert logged[1]["lr"]["d"] == pytest.approx(2e-4 * (1 - 2 / 3))
    assert "config.yaml" in {p.name for p in run.iterdir()}
    assert not [p for p in run.rglob("*") if p.suffix in {".pt", ".pth", ".pkl", ".pickle"}]


def test_collapse_warning(tmp_path, caplog):
    mon = Monitor(tmp_path, total_steps=10, start_step=0, show_bar=False, tensorboard=False)
    diverse = torch.rand(8, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    collapsed = diverse[:1].repeat(8, 1, 1, 1) + 0.01 * diverse
    with caplog.at_level(logging.WARNING):
        mon.log_samples(1, tile_images(diverse, 4), diverse)
        mon.log_samples(2, tile_images(collapsed, 4), collapsed)
    mon.close()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    assert [r["collapse_warning"] for r in records] == [False, True]
    assert records[1]["diversity"] < 0.1 * records[0]["diversity"]
    assert "mode collapse" in caplog.text


def test_dataset_too_small_and_bad_overrides(tmp_path):
    with pytest.raises(ConfigError, match="too small"):
        train(tiny_config("dcgan", batch_size=64), packed=make_packed(n=8),
              run_dir=tmp_path / "a", tensorboard=False)
    with pytest.raises(ConfigError, match="unknown config key"):
        tiny_config("dcgan").replace(learning_rate=1.0)
    with pytest.raises(ConfigError, match="num_domains"):
        train(tiny_config("dcgan", model_config={"width": 8, "num_domains": 3}),
              packed=make_packed(), run_dir=tmp_path / "b", tensorboard=False)


def test_existing_run_dir_is_not_overwritten(tmp_path):
    packed = make_packed()
    cfg = tiny_config("dcgan", steps=1, sample_every=0)
    train(cfg, packed=packed, run_dir=tmp_path / "run", tensorboard=False)
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg, packed=packed, run_dir=tmp_path / "run", tensorboard=False)


def test_trainer_step_clips_gradients_and_freezes_d_for_g():
    from polychrome.data.loader import InMemoryLoader
    from polychrome.models import create_model
    from polychrome.training.config import resolve_config
    from polychrome.training.distributed import DistEnv
    from polychrome.training.trainers import TrainContext, get_trainer_class

    torch.manual_seed(0)
    model = create_model("dcgan", resolution=16, num_domains=2, width=8)
    cfg = resolve_config(tiny_config("dcgan", grad_clip=0.01, lr_g=0.0, lr_d=0.0),
                         model.train_defaults)
    ctx = TrainContext(env=DistEnv(), device=torch.device("cpu"),
                       noise_gen=torch.Generator().manual_seed(1))
    trainer = get_trainer_class(model.family)(model, cfg, ctx)
    assert set(trainer.optimizers) == {"g", "d"}
    data = InMemoryLoader(make_packed(), 8).forever()
    g_before = [p.clone() for p in model.generator.parameters()]
    logs = trainer.train_step(data, 0)
    assert {"loss_d", "loss_g", "d_real", "d_fake"} <= set(logs)
    for net in (model.generator, model.discriminator):
        norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in net.parameters()))
        assert norm <= 0.01 + 1e-6
    assert all(p.requires_grad for p in model.discriminator.parameters())  # unfrozen again
    # lr 0: Adam moves nothing (the grads above are the clipped ones it was given)
    for a, b in zip(g_before, model.generator.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_time_budget_stops_a_run_and_checkpoints(tmp_path, clock):
    from polychrome.training.budget import TimeBudget

    budget = TimeBudget(0.3, clock)
    cfg = tiny_config("dcgan", steps=10**6, checkpoint_every=0, sample_every=0)
    result = train(cfg, packed=make_packed(), run_dir=tmp_path / "run", tensorboard=False,
                   should_stop=budget)
    wall, cpu = budget.used()
    assert result.stopped and result.step == budget.steps > 0
    assert (wall if clock == "wall" else cpu) >= 0.3
    assert result.checkpoint.name == f"step-{result.step:06d}"
    with pytest.raises(ConfigError):
        TimeBudget(0, "wall")
    with pytest.raises(ConfigError):
        TimeBudget(1, "sundial")


def test_time_based_sample_grids_leave_training_unchanged(tmp_path):
    """sample_every_s adds grids by the clock (a first preview within a minute, whatever
    the step rate); they run under a forked RNG, so the run's weights do not change."""
    assert 0 < TrainConfig().sample_every_s <= 30  # the default: a trained grid early on
    for key in ("sample_every_s", "progress_every_s"):
        with pytest.raises(ConfigError, match=f"{key} must be >= 0"):
            TrainConfig.from_dict({key: -1.0})
    packed = make_packed()
    runs = {}
    for name, every_s in (("steps", 0.0), ("clock", 1e-6)):
        cfg = tiny_config("dcgan", steps=5, checkpoint_every=0, sample_every=1000,
                          sample_every_s=every_s)
        runs[name] = train(cfg, packed=packed, run_dir=tmp_path / name, tensorboard=False)
    grids = {name: sorted(p.name for p in (tmp_path / name / "samples").glob("*.png"))
             for name in runs}
    assert grids["steps"] == ["step-000000.png", "step-000005.png"]  # the first and the last
    # each step takes far longer than the (doubling) microsecond waits: a grid after each,
    # and the final one is not written twice
    assert grids["clock"] == [f"step-{s:06d}.png" for s in range(6)]
    lines = [json.loads(line) for line in (tmp_path / "clock" / "metrics.jsonl").open()]
    assert [r["step"] for r in lines if "samples" in r] == list(range(6))
    a = load_checkpoint(runs["steps"].checkpoint)[0]
    b = load_checkpoint(runs["clock"].checkpoint)[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert runs["steps"].final == runs["clock"].final
