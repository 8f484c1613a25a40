"""StarGAN v2 trainer (Choi et al. 2020), written from the paper.

One step = the paper's iteration: the D and G objectives of two branches, one with
latent-guided style codes s = F(z, y_trg), one with reference-guided codes
s = E(x_ref, y_trg). The generator objective of each branch is

    L_adv + lambda_sty * |s - E(G(x, s), y_trg)|_1            (style reconstruction)
          - lambda_ds  * |G(x, s1) - G(x, s2)|_1              (diversity, decays to 0)
          + lambda_cyc * |x - G(G(x, s), E(x, y_org))|_1      (cycle consistency)
          + lambda_id  * |x - G(x, E(x, y_org))|_1            (identity; not in the paper)
          + lambda_pair * |G(x, s) - x_trg|_1                 (paired; not in the paper)

D is a multi-task discriminator: it is asked "real image of domain y?" with y the
source label for real images and y_trg for fakes; R1 on real images (lazily: every
`r1_interval` steps, scaled by it). The latent branch trains G, F and E together (F with
its own small learning rate lr_f); the reference branch trains G only.

Two schedules of the same objective (`trainer_options.batched`):
- batched (default): one D update on the sum of both branches' D losses, then one
  G/F/E update on the sum of both branches' G losses, each parameter getting the
  gradient only of the branches that train it. What the branches share is computed
  once: G's encoding of the sources (both branches restyle the same x, and the
  diversity images too), the source's own style E(x, y) for the cycle term, D's real
  pass (and its R1), and the fakes D judges are the ones the G update then trains on
  (G does not change between the two updates, so they are the same pictures).
  Both branches' fakes, cycles and D passes run as one batch of 2B.
- four updates (batched: false): the paper's code order, a D and a G update per branch,
  each computing everything it needs again; about 1.5x the arithmetic per step.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch import nn

from ...data.cache import PackedDataset
from ...data.loader import InMemoryLoader, to_float
from ...errors import ConfigError
from ..losses import get_losses
from ..monitor import tile_images
from ..regularizers import r1_penalty
from ..rng import derive_seed
from .base import Logs, SampleGrid, frozen
from .options import TrainerOptions, need
from .translation import TranslationTrainer, pick_sources, translation_trainer

MAX_GRID_ROWS = 16  # styles shown in a sample grid (one row each)


class StyleBatch(NamedTuple):
    x: torch.Tensor  # (B, 3, R, R) sources in [-1, 1]
    y: torch.Tensor  # (B,) their styles
    x_ref: torch.Tensor  # (B, 3, R, R) references, one per target style
    x_ref2: torch.Tensor  # (B, 3, R, R) another image of each reference's style
    y_trg: torch.Tensor  # (B,) the target styles
    # With `paired`: the source's own drawing in the target style (black where the
    # dataset has none, masked out by has_pair) and (B,) bool where it exists. None otherwise.
    x_pair: torch.Tensor | None = None
    has_pair: torch.Tensor | None = None


class StyleBatchLoader:
    """Source batches plus pairs of reference images from one target style.

    forever() yields StyleBatch. Sources are shuffled rows; references are drawn with
    the styles balanced (each target style equally often, as the paper samples target
    domains uniformly); x_ref2 is another image of the same style as x_ref, picked by a
    generator seeded from the reference loader's position, so the state is just the two
    loaders' positions. `paired` adds each source's ground truth in the target style
    (same file stem), a pure lookup that changes no state.
    """

    def __init__(self, packed: PackedDataset, batch_size: int, *, device: torch.device,
                 seed: int, rank: int = 0, world_size: int = 1, paired: bool = False):
        self.packed, self.device, self.rank = packed, device, rank
        self.seed = seed
        self.partners = packed.stem_partners() if paired else None  # (N, K) rows or -1
        if self.partners is not None and not bool((self.partners >= 0).sum(1).gt(1).any()):
            raise ConfigError("stargan: lambda_pair needs a dataset whose style folders share "
                              "file names (the same subject drawn in two or more styles) "
                              "and this one has none: set trainer_options.lambda_pair to 0 "
                              "(scripts/defaults/emoji-stargan.yaml is such a recipe)",
                              code="no_pairs")
        self.src = InMemoryLoader(packed, batch_size, device=device, seed=seed, shuffle=True,
                                  drop_last=True, rank=rank, world_size=world_size)
        self.ref = InMemoryLoader(packed, batch_size, device=device,
                                  seed=derive_seed(seed, "reference") & 0x7FFFFFFF,
                                  drop_last=True, rank=rank, world_size=world_size,
                                  balance=True)
        counts = torch.bincount(packed.labels, minlength=packed.num_domains)
        self._rows = torch.argsort(packed.labels, stable=True)  # rows grouped by style
        self._start = torch.cumsum(counts, 0) - counts
        self._count = counts

    def _partners(self, y_ref: torch.Tensor, epoch: int, position: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(derive_seed(self.seed, "ref2", self.rank, epoch,
                                                      position))
        y = y_ref.cpu()
        within = (torch.rand(len(y), generator=g, dtype=torch.float64) * self._count[y]).long()
        within = torch.minimum(within, self._count[y] - 1)
        rows = self._rows[self._start[y] + within]
        key = derive_seed(self.seed, "ref2-crops", self.rank, epoch, position)
        return to_float(self.packed.gather(rows, key).to(self.device))

    def _ground_truth(self, rows: torch.Tensor, y_trg: torch.Tensor,
                      key: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The drawings of `rows`' stems in styles `y_trg`: (B, 3, R, R), (B,) bool.

        `key` is the source batch's: crops-mode data cuts the same region of both."""
        found = self.partners[rows, y_trg.cpu()]  # (B,) row or -1
        has = found >= 0
        images = self.packed.gather(found.clamp(min=0), key)
        images[~has] = 0
        return to_float(images.to(self.device)), has.to(self.device)

    def forever(self) -> Iterator[StyleBatch]:
        while True:
            rows, x, y = self.src.next_batch_with_rows()
            key = self.src.last_key
            epoch, position = self.ref.epoch, self.ref.position
            x_ref, y_ref = self.ref.next_batch()
            x_ref2 = self._partners(y_ref, epoch, position)
            if self.partners is None:
                yield StyleBatch(x, y, x_ref, x_ref2, y_ref)
            else:
                yield StyleBatch(x, y, x_ref, x_ref2, y_ref, *self._ground_truth(rows, y_ref, key))

    def state_dict(self) -> dict[str, Any]:
        return {"src": self.src.state_dict(), "ref": self.ref.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.src.load_state_dict(state["src"])
        self.ref.load_state_dict(state["ref"])


@dataclasses.dataclass(frozen=True)
class StarGANOptions(TrainerOptions):
    """StarGAN v2's knobs beyond the run config (defaults: the paper's, with the two
    extra terms off). Set them under `trainer_options`."""

    lr_f: float = 1e-6  # mapping network F's lr (the paper: 100x below G's 1e-4)
    weight_decay: float = 1e-4  # Adam weight decay of G, F, E and D
    lambda_sty: float = 1.0  # style reconstruction |s - E(G(x, s))|
    lambda_ds: float = 1.0  # diversity-sensitive weight, decays linearly to 0 ...
    ds_decay_steps: int = 0  # ... over this many steps; 0 = the whole run (the paper)
    lambda_cyc: float = 1.0  # cycle consistency |x - G(G(x, s), E(x))|
    # Not in the paper: CycleGAN's identity loss |x - G(x, E(x, y))|, which makes G pass
    # content through from the first steps (short CPU budgets need it).
    lambda_id: float = 0.0
    # Not in the paper: |G(x, s) - x_trg| against the source's own drawing in the target
    # style, on data sets whose style folders share file names (refused on others).
    lambda_pair: float = 0.0
    # One D and one G update per step over both branches, sharing what they have in
    # common (see the module docstring); false = the paper code's four updates.
    batched: bool = True

    def check(self, who: str) -> None:
        for key in ("lr_f", "weight_decay", "lambda_sty", "lambda_ds", "ds_decay_steps",
                    "lambda_cyc", "lambda_id", "lambda_pair"):
            value = getattr(self, key)
            need(value >= 0, who, f"{key} must be >= 0, got {value}")


@translation_trainer("stargan")
class StarGANTrainer(TranslationTrainer):
    options_class = StarGANOptions
    options: StarGANOptions

    def __init__(self, model: nn.Module, config: Any, ctx: Any):
        super().__init__(model, config, ctx)
        opts = self.options
        self.G, self.F = model.generator, model.mapping
        self.E, self.D = model.style_encoder, model.discriminator
        lrs = {"g": config.lr_g, "f": opts.lr_f, "e": config.lr_g, "d": config.lr_d}
        nets = {"g": self.G, "f": self.F, "e": self.E, "d": self.D}
        self.params = {n: list(net.parameters()) for n, net in nets.items()}
        for n in nets:
            opt = self.add_optimizer(n, self.params[n], lrs[n])
            for group in opt.param_groups:
                group["weight_decay"] = opts.weight_decay
        self.d_loss_fn, self.g_loss_fn = get_losses(config.loss)
        self.lambda_sty = opts.lambda_sty
        self.lambda_ds0 = opts.lambda_ds
        # 0 = decay over the whole run (the paper decays over all of its iterations).
        self.ds_steps = opts.ds_decay_steps or int(config.steps)
        self.lambda_cyc = opts.lambda_cyc
        self.lambda_id = opts.lambda_id
        self.lambda_pair = opts.lambda_pair

    def make_loader(self, packed: PackedDataset) -> StyleBatchLoader:
        return StyleBatchLoader(packed, int(self.config.batch_size), device=self.ctx.device,
                                seed=int(self.config.seed), rank=self.ctx.env.rank,
                                world_size=self.ctx.env.world_size,
                                paired=self.lambda_pair > 0)

    def lambda_ds(self, step: int) -> float:
        """Diversity weight at `step`: linear from lambda_ds to 0 over ds_decay_steps."""
        return self.lambda_ds0 * max(0.0, 1.0 - step / max(1, self.ds_steps))

    def _z(self, n: int) -> torch.Tensor:
        return self.model.sample_z(n, generator=self.ctx.noise_gen, device=self.ctx.device)

    def _r1_due(self, update: int) -> bool:
        """R1 on the `update`-th D update of the run (lazy: every r1_interval-th)."""
        return self.config.r1_gamma > 0 and update % int(self.config.r1_interval) == 0

    # -- one step ------------------------------------------------------------------------
    def train_step(self, data: Iterator[StyleBatch], step: int) -> Logs:
        b = next(data)
        x, y, y_trg = b.x, b.y, b.y_trg
        if self.ctx.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
            b = b._replace(x=x, x_ref=b.x_ref.contiguous(memory_format=torch.channels_last),
                           x_ref2=b.x_ref2.contiguous(memory_format=torch.channels_last))
        n = x.shape[0]
        z1, z2 = self._z(n), self._z(n)
        logs: Logs = {}
        if self.options.batched:
            logs.update(self._batched_step(b, step, z1, z2))
        else:
            logs.update(self._d_step(x, y, y_trg, step, 0, z=z1))
            logs.update(_prefixed("ref_", self._d_step(x, y, y_trg, step, 1, ref=b.x_ref)))
            logs.update(self._g_step(b, step, styles=(z1, z2)))
            logs.update(_prefixed("ref_", self._g_step(b, step, refs=(b.x_ref, b.x_ref2))))
        logs["lambda_ds"] = torch.tensor(self.lambda_ds(step))
        if self.ada is not None:
            logs["aug_p"] = torch.tensor(self.ada.p)
        return logs

    def _d_step(self, x: torch.Tensor, y: torch.Tensor, y_trg: torch.Tensor, step: int,
                k: int, *, z: torch.Tensor | None = None,
                ref: torch.Tensor | None = None) -> Logs:
        cfg = self.config
        do_r1 = self._r1_due(2 * step + k)
        with torch.no_grad(), self.autocast():
            s = self.F(z, y_trg) if ref is None else self.E(ref, y_trg)  # (B, style_dim)
            fake = self.G(x, s)  # (B, 3, R, R) in [-1, 1]
        real = x.detach().requires_grad_(do_r1)
        with self.autocast():
            real_logits = self.D(self.d_input(real, step), y).float()  # (B,)
            fake_logits = self.D(self.d_input(fake.float(), step), y_trg).float()
        loss, logs = self.d_loss_fn(real_logits, fake_logits)
        if do_r1:
            r1_loss, r1_logs = r1_penalty(real_logits, real, gamma=cfg.r1_gamma,
                                          interval=int(cfg.r1_interval))
            loss = loss + r1_loss
            logs.update(r1_logs)
        self.step_optimizer("d", loss, self.params["d"])
        self.update_ada(real_logits)
        return logs

    def _g_step(self, b: StyleBatch, step: int, *,
                styles: tuple[torch.Tensor, torch.Tensor] | None = None,
                refs: tuple[torch.Tensor, torch.Tensor] | None = None) -> Logs:
        x, y, y_trg = b.x, b.y, b.y_trg
        lam_ds = self.lambda_ds(step)
        latent = refs is None

        def style(i: int) -> torch.Tensor:  # (B, style_dim) for the target styles
            return self.F(styles[i], y_trg) if latent else self.E(refs[i], y_trg)

        with contextlib.ExitStack() as stack:
            stack.enter_context(frozen(self.D))
            if not latent:  # the reference step trains G only; E passes gradients through
                stack.enter_context(frozen(self.E))
            stack.enter_context(self.autocast())
            s_trg = style(0)
            fake = self.G(x, s_trg)
            adv, logs = self.g_loss_fn(self.D(self.d_input(fake.float(), step), y_trg).float())
            loss_sty = (self.E(fake, y_trg) - s_trg).abs().mean()
            loss_ds = torch.zeros((), device=x.device)
            if lam_ds > 0:  # the second image is a fixed target: no graph needed
                with torch.no_grad():
                    fake2 = self.G(x, style(1))
                loss_ds = (fake - fake2).abs().mean()
            loss = adv + self.lambda_sty * loss_sty - lam_ds * loss_ds
            # Terms with a zero weight are skipped, not computed and multiplied by 0.
            s_own = self.E(x, y) if self.lambda_cyc > 0 or self.lambda_id > 0 else None
            loss_cyc = torch.zeros((), device=x.device)
            if self.lambda_cyc > 0:
                rec = self.G(fake, s_own)  # back to the source style
                loss_cyc = (rec - x).abs().mean()
                loss = loss + self.lambda_cyc * loss_cyc
            loss_id = torch.zeros((), device=x.device)
            if self.lambda_id > 0:
                loss_id = (self.G(x, s_own) - x).abs().mean()
                loss = loss + self.lambda_id * loss_id
            loss_pair = torch.zeros((), device=x.device)
            if self.lambda_pair > 0:  # mean over the rows whose ground truth exists
                per_row = (fake.float() - b.x_pair).abs().mean(dim=(1, 2, 3))  # (B,)
                mask = b.has_pair.to(per_row.dtype)
                loss_pair = (per_row * mask).sum() / mask.sum().clamp(min=1)
                loss = loss + self.lambda_pair * loss_pair
        self.step_many(("g", "f", "e") if latent else ("g",), loss.float(), self.params)
        logs.update({"sty": loss_sty.detach(), "ds": loss_ds.detach(),
                     "cyc": loss_cyc.detach(), "id": loss_id.detach(),
                     "pair": loss_pair.detach()})
        return logs

    def _batched_step(self, b: StyleBatch, step: int, z1: torch.Tensor,
                      z2: torch.Tensor) -> Logs:
        """Both branches' D update, then their G/F/E update, sharing what they share.

        Rows 0..B-1 of every 2B batch are the latent branch, rows B..2B-1 the reference
        branch. Each loss is the sum of the two branches' losses (as the four-update
        schedule applies them), so F and E get exactly their branch's gradient.
        """
        cfg = self.config
        x, y, y_trg = b.x, b.y, b.y_trg
        n = x.shape[0]
        y2 = torch.cat([y_trg, y_trg])  # (2B,) the target style of every fake
        lam_ds = self.lambda_ds(step)
        logs: Logs = {}
        with self.autocast():
            # Style codes. E is trained by the latent branch only: the references' codes
            # need no graph (their gradient would reach E's weights alone).
            s_lat = self.F(z1, y_trg)  # (B, style_dim)
            with torch.no_grad():
                s_ref = self.E(b.x_ref, y_trg)
            s_fake = torch.cat([s_lat, s_ref])  # (2B, style_dim)
            content = self.G.encode(x)  # once for every picture drawn from x this step
            fake = self.G.decode(_repeat(content, 2), s_fake)  # (2B, 3, R, R)

        # -- D: real once (its loss counted for both branches), both branches' fakes.
        do_r1 = self._r1_due(step)
        real = x.detach().requires_grad_(do_r1)
        with self.autocast():
            real_logits = self.D(self.d_input(real, step), y).float()  # (B,)
            fake_logits = self.D(self.d_input(fake.detach().float(), step), y2).float()
        loss_d, d_logs = self.d_loss_fn(real_logits, fake_logits[:n])
        loss_d_ref, d_logs_ref = self.d_loss_fn(real_logits, fake_logits[n:])
        loss_d = loss_d + loss_d_ref
        logs.update(d_logs)
        logs.update(_prefixed("ref_", d_logs_ref))
        if do_r1:  # the four-update schedule applies R1 in both branches' D updates
            r1_loss, r1_logs = r1_penalty(real_logits, real, gamma=cfg.r1_gamma,
                                          interval=int(cfg.r1_interval))
            loss_d = loss_d + 2 * r1_loss
            logs.update(r1_logs)
        self.step_optimizer("d", loss_d, self.params["d"])
        self.update_ada(real_logits)

        # -- G (+ F, E from the latent branch), against the updated D.
        with contextlib.ExitStack() as stack:
            stack.enter_context(frozen(self.D))
            stack.enter_context(self.autocast())
            adv_logits = self.D(self.d_input(fake.float(), step), y2).float()  # (2B,)
            adv_lat, g_logs = self.g_loss_fn(adv_logits[:n])
            adv_ref, g_logs_ref = self.g_loss_fn(adv_logits[n:])
            sty_lat = (self.E(fake[:n], y_trg) - s_lat).abs().mean()
            with frozen(self.E):  # the reference branch trains G only
                sty_ref = (self.E(fake[n:], y_trg) - s_ref).abs().mean()
            loss = adv_lat + adv_ref + self.lambda_sty * (sty_lat + sty_ref)
            zero = torch.zeros((), device=x.device)
            ds_lat = ds_ref = zero
            if lam_ds > 0:  # the second pictures are fixed targets: no graph needed
                with torch.no_grad():
                    s2 = torch.cat([self.F(z2, y_trg), self.E(b.x_ref2, y_trg)])
                    fake2 = self.G.decode(_repeat(_detached(content), 2), s2)
                gap = (fake - fake2).abs()
                ds_lat, ds_ref = gap[:n].mean(), gap[n:].mean()
                loss = loss - lam_ds * (ds_lat + ds_ref)
            s_own = self.E(x, y) if self.lambda_cyc > 0 or self.lambda_id > 0 else None
            cyc_lat = cyc_ref = zero
            if self.lambda_cyc > 0:  # back to the source style; E learns from the latent half
                rec = self.G(fake, torch.cat([s_own, s_own.detach()]))
                err = (rec - torch.cat([x, x])).abs()
                cyc_lat, cyc_ref = err[:n].mean(), err[n:].mean()
                loss = loss + self.lambda_cyc * (cyc_lat + cyc_ref)
            loss_id = zero
            if self.lambda_id > 0:
                # Both branches' identity terms are the same picture: computed once and
                # counted twice for G, once for E (its value is s_own, half its gradient).
                s_half = s_own.detach() + 0.5 * (s_own - s_own.detach())
                loss_id = (self.G.decode(content, s_half) - x).abs().mean()
                loss = loss + 2 * self.lambda_id * loss_id
            pair_lat = pair_ref = zero
            if self.lambda_pair > 0:  # mean over the rows whose ground truth exists
                per_row = (fake.float() - torch.cat([b.x_pair, b.x_pair])).abs().mean(
                    dim=(1, 2, 3))  # (2B,)
                mask = b.has_pair.to(per_row.dtype)
                count = mask.sum().clamp(min=1)
                pair_lat = (per_row[:n] * mask).sum() / count
                pair_ref = (per_row[n:] * mask).sum() / count
                loss = loss + self.lambda_pair * (pair_lat + pair_ref)
        self.step_many(("g", "f", "e"), loss.float(), self.params)
        logs.update(g_logs)
        logs.update(_prefixed("ref_", g_logs_ref))
        for key, lat, ref in (("sty", sty_lat, sty_ref), ("ds", ds_lat, ds_ref),
                              ("cyc", cyc_lat, cyc_ref), ("id", loss_id, loss_id),
                              ("pair", pair_lat, pair_ref)):
            logs[key], logs["ref_" + key] = lat.detach(), ref.detach()
        return logs

    # -- samples -------------------------------------------------------------------------
    def fixed_inputs(self, packed: Any, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """`sample_cols` sources (styles interleaved), one z per column, one row per style."""
        cols = int(self.config.sample_cols)
        rows = min(int(self.model.config.num_domains), MAX_GRID_ROWS)
        return {"x": pick_sources(packed, cols, generator),
                "z": self.model.sample_z(cols, generator=generator, device="cpu"),
                "y": torch.arange(rows, dtype=torch.int64)}

    @torch.no_grad()
    def sample_grid(self, model: nn.Module, fixed: dict[str, torch.Tensor]) -> SampleGrid:
        """Row 0: the sources; row k+1: every source restyled into style k (latent-guided)."""
        dev = self.ctx.device
        x, z = fixed["x"].to(dev), fixed["z"].to(dev)
        content = model.generator.encode(x)  # computed once, reused by every style row
        outs = []
        for k in fixed["y"].tolist():
            s = model.mapping(z, torch.full((x.shape[0],), k, dtype=torch.int64, device=dev))
            outs.append(model.generator.decode(content, s).float().clamp(-1, 1).cpu())
        samples = torch.cat(outs)  # (rows * cols, 3, R, R) in [-1, 1]
        grid = tile_images(torch.cat([x.cpu(), samples]), x.shape[0])
        return SampleGrid(grid, samples)


def _repeat(content: Any, times: int) -> Any:
    """A generator Content for a batch repeated `times` times along the batch axis."""
    return type(content)(content.features.repeat(times, 1, 1, 1),
                         tuple(t.repeat(times, 1, 1, 1) for t in content.skips),
                         None if content.source is None else content.source.repeat(times, 1, 1, 1))


def _detached(content: Any) -> Any:
    return type(content)(content.features.detach(), tuple(t.detach() for t in content.skips),
                         None if content.source is None else content.source.detach())


def _prefixed(prefix: str, logs: Logs) -> Logs:
    return {prefix + k: v for k, v in logs.items()}

