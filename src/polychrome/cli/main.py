"""`polychrome` entry point: sub-commands, and errors turned into one-line messages."""

from __future__ import annotations

import logging
import sys

import click

from ..errors import PolychromeError
from .common import setup_logging


@click.group(
    name="polychrome",
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option("--verbose", "-v", is_flag=True, help="Debug logging on stderr.")
def app(verbose: bool) -> None:
    """Polychrome: import image collections, train GANs, generate style-diverse images.

    State lives in POLYCHROME_HOME (default ~/.polychrome).
    """
    setup_logging(verbose)


def _register_commands() -> None:
    # Each command group lives in its own module and adds itself to `app`.
    from . import data, demo, eval, generate, models, restore, serve, style, train  # noqa: F401


_register_commands()


def main(argv: list[str] | None = None) -> int:
    try:
        app.main(args=argv, prog_name="polychrome", standalone_mode=False)
    except PolychromeError as e:
        click.echo(f"error: {e}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except Exception as e:  # a bug, not a user error: details only with -v
        logging.getLogger("polychrome").debug("internal error", exc_info=True)
        click.echo(f"internal error: {type(e).__name__}: {e} (run with -v for details)", err=True)
        return 1
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
