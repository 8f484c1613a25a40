"""The standard FID network (torch-fidelity's "inception-v3-compat"), from a local weights file.

Only this extractor gives numbers comparable with papers. Polychrome never downloads
it: the user supplies the weights file torch-fidelity publishes
(`weights-inception-2015-12-05-6726825d.pth`, a plain PyTorch state_dict) with
`--inception-weights PATH` or the setting POLYCHROME_INCEPTION_WEIGHTS.

The file is read with `torch.load(weights_only=True)` (tensors only, no code runs) and
checked key by key against the architecture. torch-fidelity's constructor insists on
loading a path itself with a full unpickler, so it is handed an in-memory copy that we
serialised from the already-validated tensors — never the user's file.
"""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path

import torch
from torch_fidelity import FeatureExtractorInceptionV3

from ..errors import ConfigError
from ..settings import get_settings

log = logging.getLogger(__name__)

WEIGHTS_FILE_NAME = "weights-inception-2015-12-05-6726825d.pth"
FEATURE_DIM = 2048
_RANDOM_INIT = "__polychrome_random_init__"
_HOW_TO = (
    "the standard FID network needs its weights file, and Polychrome never downloads it. "
    f"Get torch-fidelity's {WEIGHTS_FILE_NAME} (published in torch-fidelity's v0.2.0 "
    "release) on a machine with network access, copy it here, and pass "
    "--inception-weights PATH or set POLYCHROME_INCEPTION_WEIGHTS=PATH"
)


class _CompatInceptionV3(FeatureExtractorInceptionV3):
    """torch-fidelity's network; a marker state lets tests build it with random weights."""

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if _RANDOM_INIT in state_dict:
            return None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def _build(state: dict[str, torch.Tensor] | None) -> _CompatInceptionV3:
    buf = io.BytesIO()
    torch.save(state if state is not None else {_RANDOM_INIT: torch.zeros(0)}, buf)
    buf.seek(0)
    return _CompatInceptionV3("inception-v3-compat", [str(FEATURE_DIM)],
                              feature_extractor_weights_path=buf)


def random_inception_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The architecture's state_dict with random init (the file format, without the weights)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = _build(None)
    return {k: v.clone() for k, v in net.state_dict().items()}


def read_inception_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A validated state_dict from a .pth file (tensors only)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"inception weights file {path} does not exist; {_HOW_TO}",
                          code="no_inception_weights")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise ConfigError(f"{path} is not a loadable weights file (tensors only): "
                          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}",
                          code="bad_inception_weights") from None
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ConfigError(f"{path} does not hold a state_dict (a mapping of names to tensors)",
                          code="bad_inception_weights")
    return state


class InceptionExtractor:
    """uint8 images of any size -> 2048-d pool features of the FID Inception network."""

    name = "inception"
    dim = FEATURE_DIM

    def __init__(self, state: dict[str, torch.Tensor], *, device: str | torch.device = "cpu",
                 batch_size: int = 32):
        try:
            self.net = _build(state).to(device).eval()
        except RuntimeError as e:  # missing / unexpected keys or shape mismatch
            first = str(e).splitlines()[0]
            raise ConfigError(f"the inception weights do not match the FID network: {first}",
                              code="bad_inception_weights") from None
        self.device = torch.device(device)
        self.batch_size = batch_size

    @torch.inference_mode()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) uint8 -> (N, 2048) float32 on the CPU."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 (N, 3, H, W), got {images.dtype} "
                             f"{tuple(images.shape)}")
        out = [self.net(images[i:i + self.batch_size].to(self.device))[0].float().cpu()
               for i in range(0, images.shape[0], self.batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.dim)


def load_inception(weights: str | Path | None = None, *, device: str | torch.device = "cpu",
                   batch_size: int = 32) -> InceptionExtractor:
    """The standard FID extractor from `weights` or Settings.inception_weights; never downloads."""
    path = weights if weights is not None else get_settings().inception_weights
    if path is None:
        raise ConfigError(f"no inception weights given: {_HOW_TO}", code="no_inception_weights")
    log.info("loading the FID inception network from %s", path)
    return InceptionExtractor(read_inception_weights(path), device=device, batch_size=batch_size)
