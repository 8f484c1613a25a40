"""What the benchmark scripts share: how they start and how they fail."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

import torch

from polychrome.errors import PolychromeError


def run_script(body: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Log to stderr, apply `args.threads` (when set) and run `body(args)`; a
    PolychromeError (a user's mistake: unknown dataset, bad option) is one line, exit 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        return body(args)
    except PolychromeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
