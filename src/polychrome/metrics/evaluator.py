"""The offline evaluator: a compact CNN Polychrome trains once per (dataset version, resolution).

No pretrained network exists offline, so FID/KID/PR need features learned from the
data itself. The evaluator learns them from two tasks at once:
- style classification (cross-entropy on the dataset's style labels), which also
  gives `classify()` for style-accuracy metrics;
- rotation prediction (Gidaris et al. 2018: which of 0/90/180/270 degrees was
  applied), a self-supervised task that forces shape/layout features, so the
  features stay meaningful for a dataset with a single style.
Features = global-average-pooled last conv stage (the input to both heads).

Training is seeded and runs on the CPU by default, so the same dataset version gives
the same evaluator; it is saved once under
datasets/<name>/<version>/evaluator/<resolution>/ (config.json, model.safetensors,
stats.json) and reused, so every later number is measured with the same network.
Numbers from different evaluators (other dataset version or resolution) do not
compare; neither do they compare with papers (use the inception extractor for that).

Crops mode (models trained on random crops of pictures at their own size): the
evaluator learns from random crops across the model's scale range instead of whole
pictures squared to the resolution, a different scale; it is saved as
evaluator/crops-<crop>-<lo>-<hi>/ and named "offline-crops:...".

Whether an evaluator is good enough to report anything is decided per run by
instrument.py (held-out accuracy against chance, reference distances).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from ..data.cache import PackedDataset, load_cache_dir, resolve_dataset_dir
from ..data.crops import PackedCrops, load_crops_dir
from ..errors import ConfigError, ModelError
from ..settings import get_settings
from ..utils.atomic import atomic_directory, atomic_path, atomic_write_json

log = logging.getLogger(__name__)

FORMAT = 1
MAX_INPUT = 64  # larger images are downsampled first: style and layout survive, cost stays low
DEFAULT_STEPS = 1500  # ~2 minutes on 2 CPU cores at 32 px (see the report figures)
CROPS_PER_PICTURE = 8  # crops mode: random crops per picture the evaluator learns from
MAX_EVAL_CROPS = 32_000  # at most this many in all (about 390 MB at 64 px)


@dataclasses.dataclass
class EvaluatorConfig:
    resolution: int  # side of the images it was trained on
    num_styles: int
    width: int = 16  # channels of the first stage; doubles per stage up to max_width
    max_width: int = 128
    steps: int = DEFAULT_STEPS
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    format: int = FORMAT

    @property
    def input_size(self) -> int:
        return min(self.resolution, MAX_INPUT)


def _gn(c: int) -> nn.GroupNorm:
    # GroupNorm, not BatchNorm: features of a sample never depend on its batch-mates.
    return nn.GroupNorm(min(8, c // 2), c)


class EvaluatorNet(nn.Module):
    """(B, 3, S, S) float in [-1, 1] -> features (B, D); heads for styles and rotations."""

    def __init__(self, cfg: EvaluatorConfig):
        super().__init__()
        c = cfg.width
        layers: list[nn.Module] = [nn.Conv2d(3, c, 3, padding=1), _gn(c), nn.ReLU()]
        size = cfg.input_size
        while size > 4:
            c2 = min(c * 2, cfg.max_width)
            layers += [nn.Conv2d(c, c2, 3, stride=2, padding=1), _gn(c2), nn.ReLU(),
                       nn.Conv2d(c2, c2, 3, padding=1), _gn(c2), nn.ReLU()]
            c, size = c2, size // 2
        self.trunk = nn.Sequential(*layers)
        self.feature_dim = c
        self.style_head = nn.Linear(c, max(cfg.num_styles, 1))
        self.rotation_head = nn.Linear(c, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x).mean(dim=(2, 3))  # (B, D)


def prepare(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float (B, 3, size, size) in [-1, 1] (antialiased resize if needed)."""
    x = images.float().div(127.5).sub(1.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
    return x


def _rotate(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate each image x[i] by k[i] * 90 degrees."""
    out = x.clone()
    for r in range(1, 4):
        sel = (k == r).nonzero().flatten()
        if sel.numel():
            out[sel] = torch.rot90(x[sel], r, dims=(2, 3))
    return out


class OfflineEvaluator:
    """A trained EvaluatorNet with its identity (`name`) and training stats."""

    def __init__(self, net: EvaluatorNet, config: EvaluatorConfig, styles: list[str], *,
                 name: str = "offline", stats: dict[str, Any] | None = None,
                 device: str | torch.device = "cpu", batch_size: int = 256):
        self.net = net.to(device).eval()
        self.config = config
        self.styles = list(styles)
        self.name = name
        self.stats = dict(stats or {})
        self.device = torch.device(device)
        self.batch_size = batch_size

    @property
    def dim(self) -> int:
        return self.net.feature_dim

    def _batches(self, images: torch.Tensor):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 (N, 3, H, W), got {images.dtype} "
                             f"{tuple(images.shape)}")
        for i in range(0, images.shape[0], self.batch_size):
            yield prepare(images[i:i + self.batch_size].to(self.device), self.config.input_size)

    @torch.inference_mode()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> (N, D) float32 on the CPU."""
        out = [self.net(x).float().cpu() for x in self._batches(images)]
        return torch.cat(out) if out else torch.zeros(0, self.dim)

    @torch.inference_mode()
    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> (N, num_styles) style probabilities (columns = self.styles)."""
        out = [self.net.style_head(self.net(x)).softmax(dim=1).float().cpu()
               for x in self._batches(images)]
        return torch.cat(out) if out else torch.zeros(0, len(self.styles))

    @torch.inference_mode()
    def rotation_accuracy(self, images: torch.Tensor) -> float:
        """Share of images whose rotation (each turned by its index mod 4 quarter turns) the
        rotation head names: the self-supervised head's own held-out figure."""
        hits = n = 0
        for x in self._batches(images):
            k = (torch.arange(x.shape[0]) + n) % 4
            hits += int((self.net.rotation_head(self.net(_rotate(x, k.to(x.device)))).argmax(1)
                         .cpu() == k).sum())
            n += x.shape[0]
        return hits / n if n else float("nan")

    def style_accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Share of images classified as their label (style translation metrics use this)."""
        if images.shape[0] == 0:
            return float("nan")
        pred = self.classify(images).argmax(dim=1)
        return float((pred == labels.cpu()).double().mean())

    # -- persistence ---------------------------------------------------------------------
    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous().clone() for k, v in self.net.state_dict().items()}
        with atomic_path(directory / "model.safetensors") as tmp:
            save_file(state, str(tmp), metadata={"format": "polychrome-evaluator"})
        atomic_write_json(directory / "config.json", {
            "config": dataclasses.asdict(self.config), "styles": self.styles, "name": self.name})
        atomic_write_json(directory / "stats.json", self.stats)
        return directory

    @classmethod
    def load(cls, directory: Path, *, device: str | torch.device = "cpu") -> OfflineEvaluator:
        try:
            spec = json.loads((directory / "config.json").read_text())
            cfg = EvaluatorConfig(**spec["config"])
            stats = json.loads((directory / "stats.json").read_text())
            net = EvaluatorNet(cfg)
            net.load_state_dict(load_file(str(directory / "model.safetensors")), strict=True)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
            raise ModelError(f"offline evaluator in {directory} is unreadable: {e}",
                             code="bad_evaluator") from None
        if cfg.format != FORMAT:
            raise ModelError(f"offline evaluator in {directory} has format {cfg.format}, "
                             f"expected {FORMAT}", code="bad_evaluator")
        return cls(net, cfg, spec["styles"], name=spec["name"], stats=stats, device=device)


# -- training ------------------------------------------------------------------------------
def _lr_at(step: int, cfg: EvaluatorConfig) -> float:
    warmup = max(1, cfg.steps // 20)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    t = (step - warmup) / max(1, cfg.steps - warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))


@torch.inference_mode()
def _accuracy(net: EvaluatorNet, packed: PackedDataset, cfg: EvaluatorConfig) -> dict[str, Any]:
    rot_hits = 0
    n = len(packed)
    style_hits = torch.zeros(n, dtype=torch.bool)
    for i in range(0, n, 256):
        x = prepare(packed.images[i:i + 256], cfg.input_size)
        y = packed.labels[i:i + 256]
        style_hits[i:i + 256] = net.style_head(net(x)).argmax(1) == y
        k = torch.arange(x.shape[0]) % 4  # every rotation, deterministically
        rot_hits += int((net.rotation_head(net(_rotate(x, k))).argmax(1) == k).sum())
    per_style = {name: float(style_hits[packed.labels == d].double().mean())
                 for d, name in enumerate(packed.domains) if bool((packed.labels == d).any())}
    return {"style_accuracy": int(style_hits.sum()) / max(n, 1),
            "rotation_accuracy": rot_hits / max(n, 1), "style_accuracy_per_style": per_style}


def train_evaluator(packed: PackedDataset, *, name: str = "offline", steps: int | None = None,
                    seed: int = 0, width: int = 16, batch_size: int = 64, lr: float = 2e-3,
                    progress: bool = True) -> OfflineEvaluator:
    """Train on the "train" split, report accuracy on "heldout" (on the CPU: reproducible).

    The global torch RNG is left as it was (a training run calling this mid-way must
    stay bit-reproducible).
    """
    cfg = EvaluatorConfig(resolution=packed.resolution, num_styles=packed.num_domains,
                          width=width, steps=DEFAULT_STEPS if steps is None else int(steps),
                          batch_size=batch_size, lr=lr, seed=seed)
    train, val = packed.split("train"), packed.split("heldout")
    if len(train) == 0:
        raise ConfigError("cannot train an offline evaluator on an empty dataset",
                          code="empty_dataset")
    if len(val) == 0:
        val = train
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = EvaluatorNet(cfg)
        g = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        net.train()
        loss = torch.zeros(())
        for step in tqdm(range(cfg.steps), desc="training offline evaluator", unit="step",
                         disable=None if progress else True, leave=False):  # None: TTY only
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, cfg)
            idx = torch.randint(0, len(train), (cfg.batch_size,), generator=g)
            x = prepare(train.images[idx], cfg.input_size)  # (B, 3, S, S) in [-1, 1]
            flip = torch.rand(cfg.batch_size, generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            k = torch.randint(0, 4, (cfg.batch_size,), generator=g)
            feats = net(_rotate(x, k))
            loss = F.cross_entropy(net.rotation_head(feats), k)
            if cfg.num_styles > 1:
                loss = loss + F.cross_entropy(net.style_head(feats), train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    stats = {
        **{f"val_{k}": v for k, v in _accuracy(net, val, cfg).items()},
        "final_loss": float(loss.detach()), "steps": cfg.steps, "n_train": len(train),
        "n_val": len(val), "val_is_train": val is train,
        "train_seconds": round(time.perf_counter() - t0, 2),
    }
    log.info("offline evaluator %s trained: %s", name, stats)
    return OfflineEvaluator(net, cfg, packed.domains, name=name, stats=stats)


# -- the per-dataset cache -------------------------------------------------------------------
def dataset_identity(dataset_dir: Path) -> tuple[str, int]:
    """(name, version) of a dataset version dir, from its manifest (path as fallback)."""
    try:
        manifest = json.loads((dataset_dir / "manifest.json").read_text())
        return str(manifest["name"]), int(manifest["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return dataset_dir.parent.name, int(dataset_dir.name) if (dataset_dir.name.isascii() and dataset_dir.name.isdigit()) else 0


def evaluator_name(dataset: str, version: int, resolution: int) -> str:
    return f"offline:{dataset}@v{version}/{resolution}"


def packed_fingerprint(packed: PackedDataset) -> str:
    """A short content hash of images, labels and style names."""
    h = hashlib.sha256(json.dumps(packed.domains).encode())
    h.update(packed.labels.numpy().tobytes())
    h.update(packed.images.contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def unsaved_offline_evaluator(packed: PackedDataset, *, steps: int | None = None, seed: int = 0,
                              device: str | torch.device = "cpu") -> OfflineEvaluator:
    """An evaluator for images whose dataset version is unknown: trained, kept in memory.

    Named after the content hash: training is deterministic, so the same images give
    the same network (and comparable numbers) again; it is just not saved.
    """
    name = f"offline:data-{packed_fingerprint(packed)}/{packed.resolution}"
    log.warning("no dataset given for the offline evaluator: training %s in memory "
                "(pass the dataset to save and share it)", name)
    ev = train_evaluator(packed, name=name, steps=steps, seed=seed)
    return OfflineEvaluator(ev.net, ev.config, ev.styles, name=name, stats=ev.stats,
                            device=device)


def evaluator_dir(dataset_dir: Path, resolution: int,
                  scale: tuple[int, int] | None = None) -> Path:
    """Where a dataset version keeps its evaluator: whole pictures, or crops at `scale`."""
    if scale is None:
        return dataset_dir / "evaluator" / str(resolution)
    return dataset_dir / "evaluator" / f"crops-{resolution}-{scale[0]}-{scale[1]}"


def crops_training_view(packed: PackedCrops, per_picture: int = CROPS_PER_PICTURE,
                        seed: int = 0) -> PackedDataset:
    """Every picture as `per_picture` random crops over the scale range (flipped at random),
    file names repeated: the held-out split by file stem still applies."""
    n = len(packed)
    k = max(1, min(per_picture, MAX_EVAL_CROPS // max(n, 1)))
    rows = torch.arange(n)
    images = torch.cat([packed.gather(rows, key=seed * 1_000_003 + i) for i in range(k)])
    return PackedDataset(images=images, labels=packed.labels.repeat(k),
                         domains=list(packed.domains), files=list(packed.files) * k,
                         resolution=packed.resolution, fit="crops-view")


def get_offline_evaluator(dataset: str | Path, resolution: int, *, version: int | None = None,
                          steps: int | None = None, seed: int = 0,
                          scale: tuple[int, int] | list[int] | None = None,
                          replace: bool = False,
                          device: str | torch.device = "cpu") -> OfflineEvaluator:
    """The evaluator of a dataset version at `resolution`: loaded if saved, else trained once.

    It is always trained on the whole dataset version (its train split), centre-cropped,
    whoever asks first, so its identity depends only on (dataset version, resolution).
    With `scale` (crops mode) it learns from random crops of side `resolution` taken at
    shorter sides in `scale`, as crops-mode models are trained. `steps`/`seed` only matter
    when it has to be trained; a saved evaluator is reused so that numbers stay comparable
    across runs, unless `replace` (one whose figures were refused: nothing compares with it).
    """
    dataset_dir = resolve_dataset_dir(dataset, version)
    name, ver = dataset_identity(dataset_dir)
    crops = None if scale is None else tuple(int(v) for v in scale)
    final = evaluator_dir(dataset_dir, resolution, crops)
    settings = get_settings()
    if (final / "config.json").is_file():
        if not replace:
            return OfflineEvaluator.load(final, device=device)
        settings.ensure_dirs()
        trash = Path(tempfile.mkdtemp(prefix="replaced-evaluator.", dir=settings.tmp_dir))
        final.rename(trash / "old")  # out of the way first: never half an evaluator in place
        shutil.rmtree(trash, ignore_errors=True)
        log.info("replacing the offline evaluator in %s", final)
    if crops is None:
        packed = load_cache_dir(dataset_dir, resolution, "crop")
        ev_name = evaluator_name(name, ver, resolution)
    else:
        store = load_crops_dir(dataset_dir, resolution, crops)
        log.info("training a crops evaluator for %s:%d (%d px crops at shorter sides %d-%d)",
                 name, ver, resolution, *store.scale)
        packed = crops_training_view(store, seed=seed)
        ev_name = f"offline-crops:{name}@v{ver}/{resolution}@{store.scale[0]}-{store.scale[1]}"
    ev = train_evaluator(packed, name=ev_name, steps=steps, seed=seed)
    settings.ensure_dirs()
    try:
        with atomic_directory(final, settings.tmp_dir) as work:
            ev.save(work)
    except FileExistsError:  # another process finished first: use theirs, for comparability
        return OfflineEvaluator.load(final, device=device)
    log.info("saved offline evaluator to %s", final)
    return OfflineEvaluator.load(final, device=device)
