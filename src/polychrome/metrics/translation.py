"""Translation metrics for image -> image models, with ground truth from shared file names.

When every style folder draws the same subjects under the same file names (the emoji
set, the synthetic shapes set), translating held-out image `stem` from style A to B has
a right answer: the real B drawing of `stem`. Only the FIXED held-out split
(`PackedDataset.split("heldout")`, chosen by file stem) is used for sources, targets and
references, so a model trained with `split: train` never saw any of them.

For every held-out stem and every ordered pair of styles (A, B) where both drawings exist:
  paired_*        translation (latent-guided, z from a fixed seed) vs the real B drawing:
                  pixel L1 (images in [0, 1]), SSIM (Wang et al. 2004; 11x11 Gaussian window,
                  sigma 1.5, per channel, averaged) and L2 distance in the extractor's
                  feature space;
  paired_*_ref    the same, reference-guided: the style comes from a random OTHER held-out
                  image of style B;
  identity_*      the baseline: the untranslated source vs the same target;
  style_accuracy  share of translations the offline evaluator classifies as style B
                  (`identity_style_accuracy`: the same for the untranslated sources;
                  `style_accuracy_per_style`: per target style B);
  diversity_*     mean pairwise distance between translations of one source with different
                  seeds (pixel L1, feature L2): no LPIPS weights exist offline;
  fid_per_style   per target style: FID (and `kid_per_style`: KID mean) between the
                  latent-guided translations into B and all real images of B;
                  `polychrome eval` adds each one's floor, ceiling and position between them
                  (`fid_context_per_style`, instrument.py), after checking the instrument.
Translations are quantised to uint8 first: the numbers describe the PNGs a user gets.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from ..data.cache import PackedDataset
from ..errors import ConfigError
from ..models.base import GANModel
from ..sampling import to_uint8
from .fidelity import fid, kid
from .instrument import card_figures, format_instrument, position

log = logging.getLogger(__name__)


# -- SSIM -------------------------------------------------------------------------------------
def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """(size, size) float64 Gaussian kernel summing to 1."""
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: torch.Tensor, b: torch.Tensor, *, window: int = 11, sigma: float = 1.5,
         data_range: float = 1.0) -> torch.Tensor:
    """Per-image SSIM of (N, C, H, W) images in [0, data_range] -> (N,) float64.

    Local statistics under a Gaussian window (valid positions only, as in the paper;
    the window shrinks to the image side, odd, for images smaller than 11 px).
    """
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"ssim needs two (N, C, H, W) tensors of one shape, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    size = min(window, a.shape[-1], a.shape[-2])
    size -= 1 - size % 2  # odd
    c = a.shape[1]
    w = gaussian_window(size, sigma).to(a.device)[None, None].expand(c, 1, size, size)
    x, y = a.double(), b.double()

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=c)

    mu_x, mu_y = filt(x), filt(y)
    var_x = filt(x * x) - mu_x * mu_x
    var_y = filt(y * y) - mu_y * mu_y
    cov = filt(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / \
        ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return s.mean(dim=(1, 2, 3))


# -- translators ------------------------------------------------------------------------------
class Translator(Protocol):
    """What the metrics need from a model: (B, 3, R, R) float in [-1, 1] in and out."""

    def latent(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor: ...

    def reference(self, x: torch.Tensor, ref: torch.Tensor,
                  y: torch.Tensor) -> torch.Tensor | None: ...


class ModelTranslator:
    """A stargan (latent / reference-guided) or cyclegan (one generator per direction)."""

    def __init__(self, model: GANModel, device: str | torch.device = "cpu"):
        if model.family != "translation":
            raise ConfigError(f"{model.name} is not a translation model", code="wrong_family")
        self.model = model.to(device).eval()
        self.device = device
        self.coded = hasattr(model, "style_from_latent")

    @torch.inference_mode()
    def latent(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        x, y = x.to(self.device), y.to(self.device)
        if self.coded:
            z = self.model.sample_z(x.shape[0], generator=torch.Generator().manual_seed(seed),
                                    device="cpu").to(self.device)
            return self.model.generator(x, self.model.style_from_latent(z, y))
        out = torch.empty_like(x)
        for t in y.unique().tolist():  # cyclegan: one direction per call
            sel = y == t
            out[sel] = self.model.translate(x[sel], int(t))
        return out

    @torch.inference_mode()
    def reference(self, x: torch.Tensor, ref: torch.Tensor,
                  y: torch.Tensor) -> torch.Tensor | None:
        if not self.coded:
            return None
        x, ref, y = x.to(self.device), ref.to(self.device), y.to(self.device)
        return self.model.generator(x, self.model.style_from_reference(ref, y))


# -- pairing ----------------------------------------------------------------------------------
def style_mapping(model_styles: Sequence[str], domains: Sequence[str]) -> dict[int, int]:
    """dataset domain index -> model style index, by name (by index if the model has none)."""
    m = {d: list(model_styles).index(name) for d, name in enumerate(domains)
         if name in model_styles}
    if len(m) >= 2:
        return m
    default = [str(i) for i in range(len(model_styles))]
    if list(model_styles) == default and len(model_styles) == len(domains):
        return {d: d for d in range(len(domains))}
    raise ConfigError(f"the model's styles ({', '.join(model_styles)}) do not match the "
                      f"dataset's ({', '.join(domains)}): at least 2 must share a name",
                      code="bad_request")


def paired_rows(held: PackedDataset, mapping: dict[int, int]) -> list[tuple[int, int]]:
    """(source row, target row) for every stem and ordered pair of mapped styles."""
    partners = held.stem_partners()  # (N, K): the row of the same stem in each style
    first: dict[str, int] = {}
    for row, f in enumerate(held.files):
        first.setdefault(PurePosixPath(f).stem, row)
    pairs = []
    for stem in sorted(first):
        rows = [r for d, r in enumerate(partners[first[stem]].tolist()) if r >= 0 and d in mapping]
        pairs += [(a, b) for a in rows for b in rows if a != b]
    return pairs


def _f(u8: torch.Tensor) -> torch.Tensor:
    return u8.float().div(127.5).sub(1.0)  # uint8 -> [-1, 1]


def _l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.double() - b.double()).abs().mean(dim=(1, 2, 3)) / 255.0  # (N,) in [0, 1]


def _mean(values: list[torch.Tensor]) -> float | None:
    return float(torch.cat(values).mean()) if values else None


def translation_metrics(translator: Translator, packed: PackedDataset, extractor: Any, *,
                        model_styles: Sequence[str] | None = None, seed: int = 0,
                        n_seeds: int = 4, max_pairs: int | None = 2000,
                        max_diversity: int = 100, batch_size: int = 32) -> dict[str, Any]:
    """The metrics above (see module doc); `extractor.features(uint8) -> (N, D)`.

    `extractor.classify` (the offline evaluator) gives style accuracy when present.
    `model_styles` names the translator's styles (default: the dataset's).
    """
    held = packed.split("heldout")
    mapping = style_mapping(list(model_styles or packed.domains), packed.domains)
    pairs = paired_rows(held, mapping)
    if not pairs:
        raise ConfigError("no held-out file name exists in two styles: translation metrics need "
                          "a dataset whose style folders share file names", code="no_pairs")
    g = torch.Generator().manual_seed(seed)
    if max_pairs is not None and len(pairs) > max_pairs:
        keep = torch.randperm(len(pairs), generator=g)[:max_pairs].sort().values.tolist()
        pairs = [pairs[i] for i in keep]
    labels = held.labels
    by_domain: dict[int, list[int]] = defaultdict(list)
    for row, d in enumerate(labels.tolist()):
        by_domain[d].append(row)
    stems = [PurePosixPath(f).stem for f in held.files]
    classify = getattr(extractor, "classify", None)
    ev_styles = list(getattr(extractor, "styles", packed.domains))
    acc: dict[str, list[torch.Tensor]] = defaultdict(list)
    gen_feats: dict[int, list[torch.Tensor]] = defaultdict(list)
    per_style_hits: dict[int, list[torch.Tensor]] = defaultdict(list)
    n_ref = 0

    def hits(images: torch.Tensor, dom: torch.Tensor) -> torch.Tensor:
        names = [packed.domains[d] for d in dom.tolist()]
        want = torch.tensor([ev_styles.index(n) if n in ev_styles else -1 for n in names])
        return (classify(images).argmax(dim=1) == want).double()

    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        src = held.images[[a for a, _ in chunk]]  # (b, 3, R, R) uint8
        tgt = held.images[[b for _, b in chunk]]
        dom = labels[[b for _, b in chunk]]  # target domain (dataset index)
        y = torch.tensor([mapping[int(d)] for d in dom])  # target style (model index)
        out = to_uint8(translator.latent(_f(src), y, seed))
        f_src, f_tgt, f_out = (extractor.features(t) for t in (src, tgt, out))
        acc["paired_l1"].append(_l1(out, tgt))
        acc["identity_l1"].append(_l1(src, tgt))
        acc["paired_ssim"].append(ssim(out.double() / 255, tgt.double() / 255))
        acc["identity_ssim"].append(ssim(src.double() / 255, tgt.double() / 255))
        acc["paired_feat"].append((f_out - f_tgt).double().norm(dim=1))
        acc["identity_feat"].append((f_src - f_tgt).double().norm(dim=1))
        for d in dom.unique().tolist():
            gen_feats[d].append(f_out[dom == d])
        if classify is not None:
            got = hits(out, dom)
            acc["style_accuracy"].append(got)
            acc["identity_style_accuracy"].append(hits(src, dom))
            for d in dom.unique().tolist():
                per_style_hits[d].append(got[dom == d])
        # reference-guided: a random other held-out drawing of the target style
        refs, keep = [], []
        for i, (a, b) in enumerate(chunk):
            others = [r for r in by_domain[int(labels[b])] if stems[r] != stems[a]]
            if others:
                refs.append(others[int(torch.randint(len(others), (1,), generator=g))])
                keep.append(i)
        if not refs:
            continue
        ref_out = translator.reference(_f(src[keep]), _f(held.images[refs]), y[keep])
        if ref_out is None:
            continue
        ref_out = to_uint8(ref_out)
        n_ref += len(keep)
        acc["paired_l1_ref"].append(_l1(ref_out, tgt[keep]))
        acc["paired_ssim_ref"].append(ssim(ref_out.double() / 255, tgt[keep].double() / 255))
        acc["paired_feat_ref"].append((extractor.features(ref_out) - f_tgt[keep]).double()
                                      .norm(dim=1))
        if classify is not None:
            acc["style_accuracy_ref"].append(hits(ref_out, dom[keep]))

    result: dict[str, Any] = {k: _mean(v) for k, v in acc.items()}
    for key in ("paired_l1_ref", "paired_ssim_ref", "paired_feat_ref", "style_accuracy",
                "style_accuracy_ref", "identity_style_accuracy"):
        result.setdefault(key, None)
    result["style_accuracy_per_style"] = {packed.domains[d]: _mean(v)
                                          for d, v in sorted(per_style_hits.items())}
    result.update(_diversity(translator, held, pairs[:max_diversity], mapping, extractor,
                             seed, n_seeds))
    result.update(_fid_per_style(packed, extractor, gen_feats))
    result.update(n_pairs=len(pairs), n_ref_pairs=n_ref, seed=seed)
    return result


def _diversity(translator: Translator, held: PackedDataset, pairs: list[tuple[int, int]],
               mapping: dict[int, int], extractor: Any, seed: int,
               n_seeds: int) -> dict[str, Any]:
    if n_seeds < 2 or not pairs:
        return {"diversity_l1": None, "diversity_feat": None, "n_diversity": 0}
    src = held.images[[a for a, _ in pairs]]
    y = torch.tensor([mapping[int(held.labels[b])] for _, b in pairs])
    outs = [to_uint8(translator.latent(_f(src), y, seed + 1000 + j)) for j in range(n_seeds)]
    feats = [extractor.features(o) for o in outs]
    l1s, fds = [], []
    for i in range(n_seeds):
        for j in range(i + 1, n_seeds):
            l1s.append(_l1(outs[i], outs[j]))
            fds.append((feats[i] - feats[j]).double().norm(dim=1))
    return {"diversity_l1": _mean(l1s), "diversity_feat": _mean(fds), "n_diversity": len(pairs)}


def _fid_per_style(packed: PackedDataset, extractor: Any,
                   gen_feats: dict[int, list[torch.Tensor]]) -> dict[str, Any]:
    fids: dict[str, float | None] = {}
    kids: dict[str, float | None] = {}
    for d, parts in sorted(gen_feats.items()):
        name = packed.domains[d]
        gen = torch.cat(parts)
        real_imgs = packed.images[packed.labels == d]
        if gen.shape[0] < 2 or real_imgs.shape[0] < 2:
            fids[name] = kids[name] = None
            continue
        real = extractor.features(real_imgs)
        value = fid(gen, real)
        fids[name] = value if math.isfinite(value) else None
        kids[name] = kid(gen, real, subsets=50)[0]
    return {"fid_per_style": fids, "kid_per_style": kids}


# -- `polychrome eval` on a translation model -------------------------------------------------
def training_split(model: GANModel) -> str | None:
    """The split the model's training run used ("train" keeps the held-out stems unseen)."""
    import yaml

    from ..settings import get_settings

    run = model.meta.get("run")
    if not run:
        return None
    path = get_settings().runs_dir / str(run) / "config.yaml"
    try:
        split = (yaml.safe_load(path.read_text()) or {}).get("split")
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return None
    return str(split) if split else None


def evaluate_translation(model: GANModel, packed: PackedDataset, *, dataset_dir: Any = None,
                         dataset_label: str = "", extractor: Any = "offline",
                         inception_weights: Any = None, evaluator_steps: int | None = None,
                         seed: int = 0, device: str | torch.device = "cpu", record: bool = True,
                         max_pairs: int | None = 2000, t0: float | None = None) -> dict[str, Any]:
    """What `polychrome eval` reports for a translation model (hooked in metrics.api)."""
    import time

    from ..persistence.models import update_metrics
    from ..sampling import model_identity
    from .api import usable_extractor

    t0 = time.perf_counter() if t0 is None else t0
    ext, instrument = usable_extractor(extractor, packed, dataset=dataset_dir, fit=packed.fit,
                                       inception_weights=inception_weights,
                                       evaluator_steps=evaluator_steps, device=device)
    trained = training_split(model)
    if trained is not None and trained != "train":
        log.warning("the model was trained on split %r: the held-out images were seen in "
                    "training, so paired errors are optimistic", trained)
    values = translation_metrics(ModelTranslator(model, device), packed, ext,
                                 model_styles=model.style_names, seed=seed, max_pairs=max_pairs)
    per_style_refs = instrument["reference"].get("per_style", {})
    values["fid_context_per_style"] = {
        s: {"fid_floor": per_style_refs.get(s, {}).get("floor"),
            "fid_ceiling": per_style_refs.get(s, {}).get("ceiling"),
            "fid_position": position(v, per_style_refs.get(s, {}).get("floor"),
                                     per_style_refs.get(s, {}).get("ceiling"))}
        for s, v in values["fid_per_style"].items()}
    name, version = model_identity(model)
    out = {"model": f"{name}:{version}" if version else name, "dataset": dataset_label,
           "split": "heldout", "extractor": ext.name, "seed": seed, "trained_split": trained,
           "translation": values, "instrument": instrument,
           "seconds": round(time.perf_counter() - t0, 2)}
    ref = getattr(model, "model_ref", None)
    if record and ref is not None and ref.name is not None:
        update_metrics(ref.name, ref.version, {f"{ext.name} translation": {
            **card_row(values), **card_figures(instrument), "dataset": dataset_label,
            "split": "heldout"}})
        out["recorded"] = True
    return out


def card_row(values: dict[str, Any]) -> dict[str, float]:
    """A translation result as a card row: scalars, and per style as `key[style]`."""
    flat = {k: v for k, v in values.items() if isinstance(v, int | float)}
    for s, v in values["fid_per_style"].items():
        if v is not None:
            flat[f"fid[{s}]"] = v
    for s, ctx in values["fid_context_per_style"].items():
        flat.update({f"{k}[{s}]": v for k, v in ctx.items() if v is not None})
    for s, v in values["style_accuracy_per_style"].items():
        if v is not None:
            flat[f"style_accuracy[{s}]"] = v
    return flat


def format_translation(result: dict[str, Any]) -> list[str]:
    """Text lines for `polychrome eval` (CLI without --json)."""
    t = result["translation"]

    def f(v: Any) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    lines = [f"{result['model']} vs {result['dataset']} (held-out pairs: {t['n_pairs']}; "
             f"extractor {result['extractor']})",
             "                 translated   untranslated (identity baseline)",
             f"  L1 (pixels)    {f(t['paired_l1']):>10}   {f(t['identity_l1'])}",
             f"  SSIM           {f(t['paired_ssim']):>10}   {f(t['identity_ssim'])}",
             f"  feature dist.  {f(t['paired_feat']):>10}   {f(t['identity_feat'])}",
             f"  style accuracy {f(t['style_accuracy']):>10}   "
             f"{f(t['identity_style_accuracy'])}"]
    if t["n_ref_pairs"]:
        lines.append(f"  reference-guided: L1 {f(t['paired_l1_ref'])}, SSIM "
                     f"{f(t['paired_ssim_ref'])}, style accuracy {f(t['style_accuracy_ref'])}")
    lines.append(f"  diversity: L1 {f(t['diversity_l1'])}, feature {f(t['diversity_feat'])}")
    for s, v in t["fid_per_style"].items():
        ctx = t["fid_context_per_style"][s]
        acc = t["style_accuracy_per_style"].get(s)
        lines.append(f"  FID [{s}] {f(v)}  (floor {f(ctx['fid_floor'])}, ceiling "
                     f"{f(ctx['fid_ceiling'])}, position {f(ctx['fid_position'])}; "
                     f"style accuracy {f(acc)})")
    lines += format_instrument(result["instrument"])
    if result.get("trained_split") not in (None, "train"):
        lines.append(f"  warning: trained on split {result['trained_split']!r}: held-out "
                     "images were seen in training")
    return lines
