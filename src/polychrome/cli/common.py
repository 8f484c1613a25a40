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
