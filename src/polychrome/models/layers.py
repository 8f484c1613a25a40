"""Shared building blocks for every GAN family (noise -> image and image -> image).

Nothing here knows about a particular architecture: equalised-lr layers
(Karras et al. 2018), modulated convolution with demodulation (Karras et al.
2020), noise injection, AdaIN (Huang & Belongie 2017), conditional BatchNorm
(de Vries et al. 2017), spectral norm (Miyato et al. 2018), a configurable
residual block, minibatch standard deviation and a projection head
(Miyato & Koyama 2018).

Style labels: every layer indexed by a style label takes it through `embed_labels`,
so a label is either hard, (B,) int64, or soft, (B, K) float weights over the K
styles (a blend of styles as an input, not as a change to the shared weights).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from ..errors import ModelError

# Gain that keeps the second moment of a leaky-ReLU(0.2) activation ~1 (StyleGAN convention).
LRELU_GAIN = math.sqrt(2.0)


def spectral_norm(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Wrap `module.weight` in spectral normalisation (a parametrisation: state_dict-safe)."""
    return parametrizations.spectral_norm(module) if enabled else module


def init_normal_(module: nn.Module, std: float = 0.02) -> None:
    """DCGAN initialisation: conv/linear/embedding weights ~ N(0, std), norm scales ~ N(1, std)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)) and m.affine:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


def conv2d(in_ch: int, out_ch: int, kernel_size: int = 3, *, sn: bool = False, bias: bool = True,
           padding_mode: str = "zeros") -> nn.Module:
    """'Same' conv with Xavier-uniform init (SNGAN), optionally spectrally normalised."""
    conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=bias,
                     padding_mode=padding_mode)
    nn.init.xavier_uniform_(conv.weight)
    if bias:
        nn.init.zeros_(conv.bias)
    return spectral_norm(conv, sn)


def upsample2x(x: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    if mode == "nearest":
        return F.interpolate(x, scale_factor=2, mode="nearest")
    return F.interpolate(x, scale_factor=2, mode=mode, align_corners=False)


def downsample2x(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2)


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


# -- equalised learning rate ------------------------------------------------------------
class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weights stored ~N(0, 1/lr_mul), scaled at runtime.

    Scaling at runtime (not at init) makes Adam's per-parameter step size equal for
    every layer; `lr_mul` < 1 slows a layer down (StyleGAN's mapping network uses 0.01).
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 lr_mul: float = 1.0, bias_init: float = 0.0, activation: str | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), bias_init / lr_mul)) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bias * self.lr_mul if self.bias is not None else None
        x = F.linear(x, self.weight * self.weight_gain, b)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, 0.2) * LRELU_GAIN
        return x


def embed_labels(embedding: nn.Embedding | EqualLinear, y: torch.Tensor) -> torch.Tensor:
    """Rows of a style-label table for hard or soft labels -> (B, dim).

    `embedding` is an nn.Embedding(K, dim) (spectral-normed or not: `.weight` is then the
    normalised table) or an EqualLinear(K, dim) fed one-hot labels (equalised lr).
    y: (B,) int64 -> exactly the lookup, bit for bit as a plain `embedding(y)`;
    y: (B, K) float weights -> y @ table: the embedding of the soft label sum_k y_k onehot(k).
    A lookup is linear in the one-hot label, so this is the table's natural extension to
    blends; being an input rather than an edit of shared weights, it is safe on a model
    that several threads use at once.
    """
    # num_embeddings, not weight.shape: reading `.weight` of a spectral-normed table runs a
    # power iteration in training mode, which the int path must not do twice.
    k = embedding.weight.shape[1] if isinstance(embedding, EqualLinear) \
        else embedding.num_embeddings
    if y.is_floating_point() and (y.dim() != 2 or y.shape[1] != k):
        raise ModelError(f"soft style labels must have shape (B, {k}), got {tuple(y.shape)}",
                         code="bad_label")
    if isinstance(embedding, EqualLinear):
        onehot = y if y.is_floating_point() else F.one_hot(y, k)
        return embedding(onehot.to(embedding.weight.dtype))
    if y.is_floating_point():
        table = embedding.weight  # (K, dim)
        return y.to(table.dtype) @ table
    return embedding(y)


class EqualConv2d(nn.Module):
    """'Same' (or strided) conv with equalised learning rate; optional scaled leaky ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, *, stride: int = 1,
                 bias: bool = True, activation: str | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_ch * kernel_size * kernel_size)
        self.stride = stride
        self.padding = kernel_size // 2
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight * self.weight_gain, self.bias, self.stride, self.padding)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, 0.2) * LRELU_GAIN
        return x


class ModulatedConv2d(nn.Module):
    """StyleGAN2 weight (de)modulation, in the 'unfused' form.

    Modulating the input channels by s, convolving with the shared weight and
    scaling each output channel by the demodulation coefficient is exactly
    conv(x, w * s / ||w * s||) — but it is one ordinary batched conv instead of a
    grouped conv with B weight copies, which is much faster on CPU.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, w_dim: int, *,
                 demodulate: bool = True):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)  # styles start at 1 = identity
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.weight_gain = 1.0 / math.sqrt(in_ch * kernel_size * kernel_size)
        self.demodulate = demodulate
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        # x: (B, in, H, W); w: (B, w_dim) -> (B, out, H, W)
        styles = self.affine(w)  # (B, in)
        weight = self.weight * self.weight_gain
        x = F.conv2d(x * styles[:, :, None, None], weight, padding=self.padding)
        if self.demodulate:
            # sum_{i,k} (w_oik s_i)^2 = sum_i s_i^2 sum_k w_oik^2: (B, in) @ (in, out)
            sq = weight.square().sum(dim=(2, 3)).t()
            dcoefs = (styles.square() @ sq + 1e-8).rsqrt()  # (B, out)
            x = x * dcoefs[:, :, None, None]
        return x


class NoiseInjection(nn.Module):
    """Add per-pixel noise with one learned strength (StyleGAN2); starts at 0 = no effect."""

    def __init__(self):
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        # noise: (B or 1, 1, H, W) or None (no noise)
        return x if noise is None else x + noise * self.strength


# -- normalisation ----------------------------------------------------------------------
class NormStats:
    """Instance-norm statistics of one picture, recorded by `record_norm_stats`.

    Holds, per InstanceNorm2d module, the (mean, biased var) of each of its calls in call
    order, each (B, C, 1, 1) float32: a few floats per channel, never the activations.
    Keyed by id(module), so it is only meaningful for the model instance it came from.
    """

    def __init__(self) -> None:
        self.stats: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self.stats.values())


class _NormProvider:
    """One active record / apply scope; `cursor` counts calls per module in this scope."""

    def __init__(self, mode: str, stats: NormStats):
        self.mode = mode
        self.stats = stats
        self.cursor: dict[int, int] = {}


# A ContextVar, not a module attribute: concurrent requests on one shared model (threads or
# asyncio tasks) each see only their own scope.
_NORM_PROVIDER: contextvars.ContextVar[_NormProvider | None] = contextvars.ContextVar(
    "polychrome_norm_stats_provider", default=None)


@contextlib.contextmanager
def record_norm_stats() -> Iterator[NormStats]:
    """Every InstanceNorm2d run inside normalises as usual and records its statistics."""
    stats = NormStats()
    token = _NORM_PROVIDER.set(_NormProvider("record", stats))
    try:
        yield stats
    finally:
        _NORM_PROVIDER.reset(token)


@contextlib.contextmanager
def apply_norm_stats(stats: NormStats) -> Iterator[NormStats]:
    """Every InstanceNorm2d run inside normalises with `stats` instead of its input's own.

    Enter it once per forward (per tile): calls are matched to the recorded ones in order,
    so a module that runs twice in a forward gets its first and second statistics.
    """
    token = _NORM_PROVIDER.set(_NormProvider("apply", stats))
    try:
        yield stats
    finally:
        _NORM_PROVIDER.reset(token)


class InstanceNorm2d(nn.InstanceNorm2d):
    """nn.InstanceNorm2d whose statistics can come from elsewhere (the whole picture).

    With no provider it *is* nn.InstanceNorm2d (same forward, parameters, state_dict keys).
    Under `record_norm_stats()` it also stores its per-(sample, channel) mean and biased
    variance; under `apply_norm_stats(stats)` it normalises with those instead of the
    input's own, so a tile of a picture is normalised exactly like the whole picture.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W) -> same shape
        provider = _NORM_PROVIDER.get()
        # Running statistics (eval with track_running_stats) are already global; unbatched
        # input is not something a tiled picture produces.
        uses_input_stats = self.training or not self.track_running_stats
        if provider is None or not uses_input_stats or x.dim() != 4:
            return super().forward(x)
        key = id(self)
        # Statistics in float32 (float64 stays): half-precision sums over a picture overflow.
        dtype = x.dtype if x.dtype == torch.float64 else torch.float32
        if provider.mode == "record":
            var, mean = torch.var_mean(x.detach().to(dtype), dim=(2, 3), keepdim=True,
                                       correction=0)  # (B, C, 1, 1) each
            provider.stats.stats.setdefault(key, []).append((mean, var))
            return super().forward(x)  # the stock kernel: recording never changes the output
        calls = provider.stats.stats.get(key, [])
        i = provider.cursor.get(key, 0)
        if i >= len(calls):
            raise ModelError("no recorded normalisation statistics for this layer: they come "
                             "from a different model or forward", code="norm_stats_missing")
        provider.cursor[key] = i + 1
        mean, var = calls[i]
        b, c, h, w = x.shape
        if mean.shape[1] != c or b % mean.shape[0]:
            raise ModelError(f"recorded statistics {tuple(mean.shape)} do not fit input "
                             f"{tuple(x.shape)}", code="norm_stats_mismatch")
        # Inference-mode batch norm over (1, B*C, H, W) with the recorded statistics as its
        # running ones: (x - mean) / sqrt(var + eps) * weight + bias in one fused kernel,
        # without the temporaries of writing it out.
        reps = b // mean.shape[0]
        weight = self.weight.to(dtype).repeat(b) if self.affine else None
        bias = self.bias.to(dtype).repeat(b) if self.affine else None
        y = F.batch_norm(x.to(dtype).reshape(1, b * c, h, w), mean.reshape(-1).repeat(reps),
                         var.reshape(-1).repeat(reps), weight, bias, False, 0.0, self.eps)
        return y.reshape(b, c, h, w).to(x.dtype)


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose scale and shift are looked up per class label (starts as plain BN)."""

    conditional = True

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.embed = nn.Embedding(num_classes, 2 * num_features)
        with torch.no_grad():
            self.embed.weight[:, :num_features].fill_(1.0)
            self.embed.weight[:, num_features:].zero_()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W); y: (B,) int64 class labels or (B, K) float soft labels, which
        # blend the per-class gains and biases with the same weights
        gamma, beta = embed_labels(self.embed, y).chunk(2, dim=1)
        return self.bn(x) * gamma[:, :, None, None] + beta[:, :, None, None]


class AdaIN(nn.Module):
    """Adaptive instance norm: instance-normalise, then (1 + gamma(s)) * x + beta(s)."""

    conditional = True

    def __init__(self, num_features: int, style_dim: int):
        super().__init__()
        self.norm = InstanceNorm2d(num_features, affine=False)
        self.fc = nn.Linear(style_dim, 2 * num_features)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W); s: (B, style_dim)
        gamma, beta = self.fc(s).chunk(2, dim=1)
        return (1 + gamma[:, :, None, None]) * self.norm(x) + beta[:, :, None, None]


def make_norm2d(kind: str, channels: int, *, num_classes: int = 0, style_dim: int = 0) -> nn.Module:
    """Normalisation by name: batch | instance | layer | cbn | adain | none."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return InstanceNorm2d(channels, affine=True)
    if kind == "layer":  # over (C, H, W) with per-channel affine; resolution independent
        return nn.GroupNorm(1, channels)
    if kind == "cbn":
        return ConditionalBatchNorm2d(channels, num_classes)
    if kind == "adain":
        return AdaIN(channels, style_dim)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


def _norm(module: nn.Module, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    return module(x, cond) if getattr(module, "conditional", False) else module(x)


def _act(kind: str, x: torch.Tensor) -> torch.Tensor:
    return F.relu(x) if kind == "relu" else F.leaky_relu(x, 0.2)


class ResBlock(nn.Module):
    """Pre-activation residual block: [norm, act, (up), conv, norm, act, conv, (down)] + shortcut.

    One class covers the SNGAN/BigGAN generator block (norm="batch"/"cbn",
    resample="up"), the SNGAN discriminator block (norm="none", sn=True,
    resample="down"; `first=True` for the input block that sees raw pixels and
    must not start with an activation), and StarGAN-v2-style encoder/decoder blocks
    (norm="instance"/"adain", act="lrelu", rescale=True). `cond` is the class label
    for "cbn" or the style code for "adain".
    """

    def __init__(self, in_ch: int, out_ch: int, *, resample: str = "none", norm: str = "none",
                 act: str = "relu", sn: bool = False, first: bool = False, rescale: bool = False,
                 num_classes: int = 0, style_dim: int = 0, hidden_ch: int | None = None):
        super().__init__()
        if resample not in ("none", "up", "down"):
            raise ValueError(f"unknown resample {resample!r}")
        # Down blocks keep the input width until the last conv (SNGAN's D): half the cost.
        hidden = hidden_ch or (in_ch if resample == "down" and not first else out_ch)
        self.resample, self.act, self.first, self.rescale = resample, act, first, rescale
        self.norm1 = make_norm2d("none" if first else norm, in_ch,
                                 num_classes=num_classes, style_dim=style_dim)
        self.conv1 = conv2d(in_ch, hidden, 3, sn=sn)
        self.norm2 = make_norm2d(norm, hidden, num_classes=num_classes, style_dim=style_dim)
        self.conv2 = conv2d(hidden, out_ch, 3, sn=sn)
        self.shortcut = (conv2d(in_ch, out_ch, 1, sn=sn)
                         if in_ch != out_ch or resample != "none" else None)

    def _residual(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        if not self.first:
            x = _act(self.act, _norm(self.norm1, x, cond))
        if self.resample == "up":
            x = upsample2x(x)
        x = self.conv1(x)
        x = self.conv2(_act(self.act, _norm(self.norm2, x, cond)))
        return downsample2x(x) if self.resample == "down" else x

    def _skip(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            x = upsample2x(x)
        if self.first and self.resample == "down":
            # pool before the 1x1 conv: 4x cheaper and what SNGAN's input block does
            return self.shortcut(downsample2x(x))
        if self.shortcut is not None:
            x = self.shortcut(x)
        return downsample2x(x) if self.resample == "down" else x

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        out = self._skip(x) + self._residual(x, cond)
        return out * (1 / math.sqrt(2)) if self.rescale else out


# -- discriminator helpers --------------------------------------------------------------
class MinibatchStdDev(nn.Module):
    """Append the std of features across a group of samples (Karras et al. 2018).

    Lets D see batch-level diversity, which penalises mode collapse. Groups take
    samples i, i + B/G, ...; G is the largest divisor of B not above `group_size`.
    """

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, C + num_channels, H, W)
        b, c, h, w = x.shape
        g = min(self.group_size, b)
        while b % g:
            g -= 1
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=(2, 3, 4))  # (B/G, F)
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # (B, F, H, W)
        return torch.cat([x, y], dim=1)


class ProjectionHead(nn.Module):
    """D output: linear(h) + <embed(y), h> (projection discriminator, Miyato & Koyama 2018).

    With num_classes <= 1 it is just the linear term. `equalized` uses
    equalised-lr layers (StyleGAN family); `sn` spectral-normalises both terms.
    """

    def __init__(self, in_features: int, num_classes: int = 1, *, sn: bool = False,
                 equalized: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.equalized = equalized
        if equalized:
            self.linear = EqualLinear(in_features, 1)
        else:
            self.linear = spectral_norm(nn.Linear(in_features, 1), sn)
        self.embed: nn.Module | None = None
        if num_classes > 1:
            if equalized:  # one-hot @ EqualLinear == an equalised-lr embedding table
                self.embed = EqualLinear(num_classes, in_features, bias=False)
            else:
                emb = nn.Embedding(num_classes, in_features)
                nn.init.normal_(emb.weight, 0.0, 0.02)
                self.embed = spectral_norm(emb, sn)
        self.proj_gain = 1.0 / math.sqrt(in_features) if equalized else 1.0

    def forward(self, h: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        # h: (B, F) features; y: (B,) int64, (B, K) float soft labels or None -> (B,) logits
        out = self.linear(h).squeeze(1)
        if self.embed is not None and y is not None:
            e = embed_labels(self.embed, y)
            out = out + (e * h).sum(dim=1) * self.proj_gain
        return out


def upsample_conv3x3(x: torch.Tensor, weight: torch.Tensor,
                     bias: torch.Tensor | None = None) -> torch.Tensor:
    """conv3x3(nearest_upsample_2x(x)) (zero padding 1) without making the large picture.

    x: (B, Cin, h, w); weight: (Cout, Cin, 3, 3) -> (B, Cout, 2h, 2w). Each of the four
    output phases (row parity a, column parity b) of a 3x3 conv over a nearest-upsampled
    picture is a 2x2 conv over the small one (a = 0 reads rows i-1, i with kernel rows
    [w0, w1 + w2]; a = 1 reads rows i, i+1 with [w0 + w1, w2]; columns alike), so one 2x2
    conv with 4 Cout outputs over the zero-padded small picture gives all of them: 4
    instead of 9 multiply-adds per output pixel, and no upsampled copy in memory.
    """
    w = weight
    rows = (torch.stack([w[:, :, 0], w[:, :, 1] + w[:, :, 2]], 2),  # a = 0: (Co, Ci, 2, 3)
            torch.stack([w[:, :, 0] + w[:, :, 1], w[:, :, 2]], 2))  # a = 1
    kernels = []
    for r in rows:
        kernels.append(torch.stack([r[..., 0], r[..., 1] + r[..., 2]], 3))  # b = 0
        kernels.append(torch.stack([r[..., 0] + r[..., 1], r[..., 2]], 3))  # b = 1
    k = torch.cat(kernels, 0)  # (4 Co, Ci, 2, 2), phases (0,0), (0,1), (1,0), (1,1)
    b4 = bias.repeat(4) if bias is not None else None
    out = F.conv2d(F.pad(x, (1, 1, 1, 1)), k.to(x.dtype), b4 if b4 is None else b4.to(x.dtype))
    n, _, h, wd = x.shape
    co = weight.shape[0]
    out = out.reshape(n, 4, co, h + 1, wd + 1)  # reshape: the conv may answer channels_last
    phases = [out[:, 2 * a + b, :, a:a + h, b:b + wd] for a in (0, 1) for b in (0, 1)]
    y = torch.stack(phases, 0).reshape(2, 2, n, co, h, wd)  # (a, b, N, Co, h, w)
    return y.permute(2, 3, 4, 0, 5, 1).reshape(n, co, 2 * h, 2 * wd)
