"""Helpers shared by CLI commands: JSON output, logging setup."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click


def emit_json(obj: Any) -> None:
    """Print exactly one JSON object on stdout."""
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def echo(msg: str = "") -> None:
    click.echo(msg)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print exactly one JSON object on stdout.")


def upscale_options(f):
    """--upscale / --upscaler: hand the result to a super-resolution model in the same call."""
    f = click.option("--upscaler", default=None,
                     help="The super-resolution model for --upscale (default: the first "
                          "registered sr model trained for that factor).")(f)
    return click.option("--upscale", type=click.Choice(["2", "4"]), default=None,
                        help="Also enlarge the result 2x or 4x with a super-resolution "
                             "(pix2pix sr) model.")(f)


RUNTIME_HELP = ("Run the networks with PyTorch (torch) or ONNX Runtime (onnx, CPU; needs the "
                "onnx extra). The pictures agree within float rounding.")


def runtime_option(f):
    return click.option("--runtime", type=click.Choice(["torch", "onnx"]), default="torch",
                        show_default=True, help=RUNTIME_HELP)(f)


def load_upscaler(upscale: str | None, upscaler: str | None, device: str,
                  styles: list[str] | None = None):
    """The sr model for --upscale, checked before any picture is made (None without it).

    Without --upscaler: the sr model trained on most of `styles` (the style names of the
    model whose pictures are enlarged), see pipelines.restore.default_upscaler."""
    from ..errors import PolychromeError

    if upscale is None:
        if upscaler is not None:
            raise PolychromeError("--upscaler names the model for --upscale: give the factor "
                                  "too (--upscale 2 or 4)", code="bad_request")
        return None
    from ..persistence.models import load_model
    from ..pipelines.restore import check_upscaler, default_upscaler

    sr = load_model(upscaler or default_upscaler(upscale, styles), device=device)
    check_upscaler(sr, upscale)
    return sr


def apply_upscale(images: list, sr, upscale: str | None, device: str) -> list:
    """Every image through the sr model (unchanged without one)."""
    if sr is None:
        return images
    from ..pipelines.restore import upscale as run

    return [run(sr, im, upscale, device) for im in images]
