"""Evaluating generators: features of generated vs real images -> FID / KID / precision-recall.

Three entry points, one code path:
- `evaluate_generator(model, packed, ...)`: a model against a packed dataset;
- `make_training_evaluator(packed, ...)`: the `evaluate(model_ema, step) -> dict` hook for
  the training loop (extractor and real features computed once, then reused);
- `evaluate_model(spec, dataset, ...)`: what `polychrome eval` and the REST API call;
  records the result on the model's card when the model is registered. Translation models
  get paired metrics (translation.py); restoration models are measured against the true
  photos with classical baselines (restoration.py).

Every result names its extractor: "inception" (the standard FID network; the only
numbers comparable with papers) or "offline:<dataset>@v<version>/<resolution>", and
carries the instrument's quality measured in the same run (instrument.py): the
evaluator's held-out accuracy and the FID floor, ceiling and reference distances. An
evaluator under the bar gets its figures refused (EvaluatorUnusable), never recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from ..data.cache import PackedDataset, load_cache_dir, load_packed, resolve_dataset_dir
from ..errors import ConfigError, PolychromeError
from ..models.base import GANModel
from ..sampling import check_noise_model, iter_samples, model_identity
from .evaluator import (
    OfflineEvaluator,
    dataset_identity,
    get_offline_evaluator,
    unsaved_offline_evaluator,
)
from .fidelity import FeatureStats, compute_metrics, feature_stats, parse_metrics
from .instrument import card_figures, fid_context, measure_instrument, require_usable

log = logging.getLogger(__name__)

EXTRACTORS = ("offline", "inception")


class FeatureExtractor(Protocol):
    name: str  # recorded with every result

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> float32 (N, D) on the CPU."""
        ...


def resolve_extractor(extractor: str | FeatureExtractor, *, dataset: str | Path | None = None,
                      resolution: int | None = None, fit: str = "crop",
                      inception_weights: str | Path | None = None,
                      evaluator_steps: int | None = None, device: str | torch.device = "cpu",
                      packed: PackedDataset | None = None,
                      replace: bool = False) -> FeatureExtractor:
    """"offline", "inception", or an extractor object (returned as is).

    "offline" is the dataset version's saved evaluator when `dataset` (and `resolution`)
    are given; with only `packed`, an unsaved one trained on those images. `fit` "crops"
    (with `packed` holding the crops store) picks the evaluator's crops mode at the
    store's scale range; "crop" and "pad" share the evaluator trained on the
    centre-cropped dataset, so its identity never depends on who asked first. `replace`
    retrains a saved one (see `usable_extractor`).
    """
    if not isinstance(extractor, str):
        return extractor
    if extractor == "inception":
        from .inception import load_inception  # imports torch-fidelity: only when asked

        return load_inception(inception_weights, device=device)
    if extractor == "offline":
        if dataset is None and packed is not None:
            return unsaved_offline_evaluator(packed, steps=evaluator_steps, device=device)
        if dataset is None or resolution is None:
            raise ConfigError("the offline extractor belongs to a dataset version: pass the "
                              "dataset (name, name:version or directory) and the resolution",
                              code="bad_request")
        scale = getattr(packed, "scale", None) if fit == "crops" else None
        return get_offline_evaluator(dataset, resolution, steps=evaluator_steps, scale=scale,
                                     replace=replace, device=device)
    raise ConfigError(f"unknown extractor {extractor!r}; choose one of {', '.join(EXTRACTORS)}",
                      code="bad_request")


def usable_extractor(extractor: str | FeatureExtractor, packed: PackedDataset, *,
                     dataset: str | Path | None = None, fit: str = "crop",
                     inception_weights: str | Path | None = None,
                     evaluator_steps: int | None = None, device: str | torch.device = "cpu",
                     ) -> tuple[FeatureExtractor, dict[str, Any]]:
    """The extractor and its quality measured on `packed`'s held-out split; refused below
    the bar (instrument.py). The references use fixed halves and noise (seed 0), not the
    sampling seed: they describe the instrument, the same for every model it measures.

    A saved offline evaluator under the bar is retrained (and replaced) when
    `evaluator_steps` asks for more steps than it had: its figures were never accepted,
    so nothing compares with it. A usable saved evaluator is always kept.
    """
    kwargs: dict[str, Any] = dict(dataset=dataset, resolution=packed.resolution, fit=fit,
                                  inception_weights=inception_weights,
                                  evaluator_steps=evaluator_steps, device=device, packed=packed)
    ext = resolve_extractor(extractor, **kwargs)
    held = packed.split("heldout")
    instrument = measure_instrument(ext, held)
    saved = extractor == "offline" and dataset is not None and isinstance(ext, OfflineEvaluator)
    if (not instrument["usable"] and saved and evaluator_steps is not None
            and evaluator_steps > ext.config.steps):
        log.warning("the saved evaluator %s (%d steps) is under the bar; training one with "
                    "%d steps to replace it", ext.name, ext.config.steps, evaluator_steps)
        ext = resolve_extractor(extractor, **kwargs, replace=True)
        instrument = measure_instrument(ext, held)
    if isinstance(ext, OfflineEvaluator):
        hint = (f"To get a usable evaluator, train it longer: `polychrome eval "
                f"--evaluator-steps N` (the evaluator_steps of an eval job) with N above its "
                f"{ext.config.steps} steps"
                + (" and the saved one is replaced" if saved else "")
                + f", or add images to the dataset ({len(held)} held-out images now).")
    else:
        hint = ("Check the feature network (for inception: its weights file), or add images "
                f"to the dataset ({len(held)} held-out images now).")
    require_usable(instrument, hint=hint)
    return ext, instrument


def sample_labels(model: GANModel, real: PackedDataset, n: int, seed: int) -> torch.Tensor | None:
    """Style labels for n samples, in the real set's style proportions when names match.

    None for an unconditional model; uniform over the model's styles otherwise.
    """
    k = model.config.num_domains
    if k <= 1:
        return None
    weights = torch.ones(k, dtype=torch.float64)
    if set(model.style_names) == set(real.domains) and len(real):
        counts = real.domain_counts()
        weights = torch.tensor([float(counts[s]) for s in model.style_names])
        if weights.sum() == 0:
            weights = torch.ones(k, dtype=torch.float64)
    g = torch.Generator().manual_seed(int(seed) + 1)
    return torch.multinomial(weights, n, replacement=True, generator=g)


class RealFeatures:
    """Features (and FID statistics) of the real images, computed once."""

    def __init__(self, extractor: FeatureExtractor, real: PackedDataset):
        if len(real) < 2:
            raise ConfigError(f"the real set has {len(real)} images; metrics need at least 2",
                              code="too_few_samples")
        t0 = time.perf_counter()
        self.features = extractor.features(real.images)  # (N_real, D)
        self.stats: FeatureStats = feature_stats(self.features)
        self.n = len(real)
        log.info("real features: %d images with %s in %.1f s", self.n, extractor.name,
                 time.perf_counter() - t0)


def _measure(model: GANModel, real: PackedDataset, ref: RealFeatures,
             extractor: FeatureExtractor, metrics: tuple[str, ...], n: int, seed: int,
             truncation: float, device: str | torch.device,
             ) -> tuple[dict[str, float], dict[str, float]]:
    """(metrics, per-style sample accuracy: {"sample_accuracy", "sample_accuracy[style]"})."""
    if model.config.resolution != real.resolution:
        log.warning("model resolution %d differs from the real images' %d",
                    model.config.resolution, real.resolution)
    labels = sample_labels(model, real, n, seed)
    classify = getattr(extractor, "classify", None)
    ev_styles = list(getattr(extractor, "styles", []) or [])
    names = list(model.style_names)
    if labels is None or classify is None or not set(names) <= set(ev_styles):
        classify = None  # unconditional, no classifier, or styles it does not know
    want = None if classify is None else \
        torch.tensor([ev_styles.index(names[int(t)]) for t in labels])  # (n,) evaluator index
    feats, hits = [], []
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG stream untouched
        # streamed: only features (and hits) are kept, so n and the resolution can be large
        for images in iter_samples(model, n, seed=seed, labels=labels, truncation=truncation,
                                   device=device, batch_size=256):  # (b, 3, R, R) uint8
            feats.append(extractor.features(images))
            if want is not None:
                done = sum(h.shape[0] for h in hits)
                hits.append(classify(images).argmax(dim=1) == want[done:done + images.shape[0]])
    values = compute_metrics(torch.cat(feats), ref.features, metrics, real_stats=ref.stats,
                             seed=seed)
    accuracy: dict[str, float] = {}
    if hits:
        hit = torch.cat(hits).double()
        accuracy["sample_accuracy"] = float(hit.mean())
        for k, name in enumerate(names):
            sel = labels == k
            if bool(sel.any()):
                accuracy[f"sample_accuracy[{name}]"] = float(hit[sel].mean())
    return values, accuracy


def _with_context(values: dict[str, float], instrument: dict[str, Any]) -> dict[str, Any]:
    """The figures with the FID's floor, ceiling and position beside them (a position is left
    out when undefined: a ceiling not above the floor)."""
    out: dict[str, Any] = dict(values)
    if "fid" in values:
        out.update({k: v for k, v in fid_context(values["fid"], instrument["reference"]).items()
                    if v is not None})
    return out


def evaluate_generator(model: GANModel, packed: PackedDataset, *,
                       metrics: tuple[str, ...] | str = ("fid", "kid"), n: int = 5000,
                       extractor: str | FeatureExtractor = "offline", seed: int = 0,
                       split: str = "all", dataset: str | Path | None = None,
                       truncation: float = 1.0, inception_weights: str | Path | None = None,
                       evaluator_steps: int | None = None,
                       device: str | torch.device = "cpu") -> dict[str, Any]:
    """Metrics of `model` against `packed` (its `split`), with the instrument's quality.

    Returns {"n", "n_real", "split", "extractor", "seed", "metrics": {"fid", "fid_floor",
    "fid_ceiling", "fid_position", "kid_mean", "kid_std", "precision", "recall"} (those asked
    for), "sample_accuracy": {"sample_accuracy", "sample_accuracy[style]"} (conditional
    models measured with a classifier), "instrument": see instrument.measure_instrument}.
    Raises EvaluatorUnusable, reporting nothing, when the extractor is under the bar.
    """
    check_noise_model(model)
    metrics = parse_metrics(metrics)
    if n < 2:
        raise ConfigError(f"n must be at least 2, got {n}", code="bad_request")
    ext, instrument = usable_extractor(extractor, packed, dataset=dataset,
                                       inception_weights=inception_weights,
                                       evaluator_steps=evaluator_steps, device=device)
    real = packed.split(split)
    ref = RealFeatures(ext, real)
    values, accuracy = _measure(model, real, ref, ext, metrics, n, seed, truncation, device)
    return {"n": n, "n_real": ref.n, "split": split, "extractor": ext.name, "seed": seed,
            "metrics": _with_context(values, instrument), "sample_accuracy": accuracy,
            "instrument": instrument}


def make_training_evaluator(packed: PackedDataset, metrics: tuple[str, ...] | str = ("fid",),
                            n: int = 1000, extractor: str | FeatureExtractor = "offline", *,
                            dataset: str | Path | None = None, seed: int = 0,
                            split: str = "all", inception_weights: str | Path | None = None,
                            evaluator_steps: int | None = None,
                            device: str | torch.device = "cpu",
                            ) -> Callable[[GANModel, int], dict[str, float]]:
    """The training loop's hook: `evaluate(model_ema, step) -> {"fid": ..., ...}`.

    The extractor (training the offline evaluator if the dataset has none yet), its quality
    and the real features are prepared on the first call and reused. Every call uses the
    same latents (`seed`), so successive numbers differ only through the model; each result
    carries the instrument (FID floor, ceiling, position, evaluator accuracy). An evaluator
    under the bar raises EvaluatorUnusable at every call (the loop logs it and trains on).
    The global RNG state is preserved, keeping training runs reproducible.
    """
    metrics = parse_metrics(metrics)
    state: dict[str, Any] = {}

    def evaluate(model: GANModel, step: int) -> dict[str, float]:
        if "refused" in state:
            raise state["refused"]
        if not state:
            try:
                ext, instrument = usable_extractor(
                    extractor, packed, dataset=dataset, fit=getattr(packed, "fit", "crop"),
                    inception_weights=inception_weights, evaluator_steps=evaluator_steps,
                    device=device)
            except PolychromeError as e:
                state["refused"] = e
                raise
            real = packed.split(split)
            state.update(ext=ext, real=real, ref=RealFeatures(ext, real),
                         instrument=instrument)
        t0 = time.perf_counter()
        values, accuracy = _measure(model, state["real"], state["ref"], state["ext"], metrics,
                                    n, seed, 1.0, device)
        out = _with_context(values, state["instrument"])
        acc = state["instrument"]["accuracy"]
        if acc is not None:
            out["evaluator_accuracy"] = acc["accuracy"]
        if "sample_accuracy" in accuracy:
            out["sample_accuracy"] = accuracy["sample_accuracy"]
        log.info("step %d: %s (%s, %.1f s)", step,
                 ", ".join(f"{k}={v:.4g}" for k, v in out.items()), state["ext"].name,
                 time.perf_counter() - t0)
        return out

    evaluate.metrics = metrics  # type: ignore[attr-defined]
    return evaluate


def evaluate_model(spec: str | GANModel, dataset: str | None = None, *,
                   metrics: tuple[str, ...] | str = ("fid", "kid"), n: int = 5000,
                   extractor: str = "offline", inception_weights: str | Path | None = None,
                   split: str = "all", fit: str | None = None, seed: int = 0,
                   evaluator_steps: int | None = None, device: str | torch.device = "cpu",
                   record: bool = True, images: str | Path | None = None,
                   scales: list[int] | None = None, mean_ab: tuple[float, float] | None = None,
                   train_images: str | Path | None = None) -> dict[str, Any]:
    """`polychrome eval`: a stored model (or a model dir) against a dataset.

    A restoration model is measured on photos instead (`images`, default: the held-out
    split of `dataset` or of its training dataset; `scales`, `mean_ab`, `train_images` and `seed`, the mask
    seed, apply to it): see `restoration.evaluate_restoration_model`.

    `dataset` and `fit` default to those the model was trained with (its meta; "crops": the
    crops store at the model's scale range and the evaluator's crops mode). The result is
    {"model", "dataset", "n", "n_real", "split", "extractor", "seed", "metrics",
    "sample_accuracy", "instrument", "seconds"} and, for a registered model and `record`, it
    is merged into the model card under the extractor's name, the instrument's figures
    beside it. An evaluator under the bar raises EvaluatorUnusable: nothing is recorded.
    """
    from ..persistence.models import load_model, update_metrics

    t0 = time.perf_counter()
    model = spec if isinstance(spec, GANModel) else load_model(spec, device=str(device))
    if model.family == "restoration":  # true photos and classical baselines (restoration.py)
        from .restoration import evaluate_restoration_model

        return evaluate_restoration_model(
            model, images=images, dataset=dataset, scales=scales, seed=seed, mean_ab=mean_ab,
            train_images=train_images, device=device, record=record)
    if images is not None or scales or mean_ab is not None or train_images is not None:
        raise ConfigError(f"--images, --scale, --mean-chroma and --train-images apply to "
                          f"restoration models; this is a {model.family} model",
                          code="bad_request")
    dataset = dataset or model.meta.get("dataset")
    if not dataset:
        raise ConfigError("which dataset? pass --dataset NAME (the model does not record the "
                          "dataset it was trained on)", code="bad_request")
    dataset_dir = resolve_dataset_dir(str(dataset))
    ds_name, ds_version = dataset_identity(dataset_dir)
    fit = fit or model.meta.get("fit") or "crop"  # real images as training saw them
    if fit == "crops":  # crops at the model's scale range; the evaluator's crops mode
        crop = int(model.meta.get("crop") or model.config.resolution)
        packed = load_packed(dataset_dir, crop, "crops", scale=model.meta.get("scale"))
    else:
        packed = load_cache_dir(dataset_dir, model.config.resolution, fit)
    if model.family == "translation":  # paired metrics on the held-out split (translation.py)
        from .translation import evaluate_translation

        return evaluate_translation(
            model, packed, dataset_dir=dataset_dir, dataset_label=f"{ds_name}:{ds_version}",
            extractor=extractor, inception_weights=inception_weights,
            evaluator_steps=evaluator_steps, seed=seed, device=device, record=record, t0=t0)
    if fit == "crops":
        raise ConfigError(f"{model.family} models are not trained on crops: pass --fit crop "
                          "or pad", code="bad_request")
    result = evaluate_generator(
        model, packed, metrics=metrics, n=n, extractor=extractor, seed=seed, split=split,
        dataset=dataset_dir, inception_weights=inception_weights,
        evaluator_steps=evaluator_steps, device=device)
    name, version = model_identity(model)
    out = {"model": f"{name}:{version}" if version else name,
           "dataset": f"{ds_name}:{ds_version}", **result,
           "seconds": round(time.perf_counter() - t0, 2)}
    ref = getattr(model, "model_ref", None)
    if record and ref is not None and ref.name is not None:
        key = out["extractor"] if split == "all" else f"{out['extractor']} [{split}]"
        update_metrics(ref.name, ref.version, {key: {
            **result["metrics"], **result["sample_accuracy"],
            **card_figures(result["instrument"]), "n": n, "dataset": out["dataset"],
            "split": split}})
        out["recorded"] = True
    return out
