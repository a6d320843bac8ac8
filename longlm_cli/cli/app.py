"""The `longlm` command group and entry point: every LongLMError becomes one `Error: ...` line, Ctrl-C exit 130."""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import LongLMError

INTERRUPTED_EXIT_CODE = 130


class _Interrupted(click.ClickException):
    """Shown as `Interrupted.` on stderr with exit code 130."""

    exit_code = INTERRUPTED_EXIT_CODE

    def __init__(self) -> None:
        super().__init__("Interrupted.")

    def show(self, file=None) -> None:
        click.echo("Interrupted.", err=True)


class LongLMGroup(click.Group):
    """A Click group that reports LongLMError as one line `Error: ...` (exit 1), never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LongLMError as exc:
            raise click.ClickException(" ".join(str(exc).split()) or type(exc).__name__) from None
        except KeyboardInterrupt:
            raise _Interrupted() from None


@click.group(cls=LongLMGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="longlm")
def cli() -> None:
    """Summarize and question documents far longer than a local LLM's context window.

    longlm uses SelfExtend (arXiv 2401.01325): nearby tokens keep their exact positions, distant tokens share
    grouped positions, so a model reads past its pretraining window without fine-tuning.
    Run `longlm plan` first to see the window W and group size G a document needs.
    """


def main() -> None:
    """Entry point of the `longlm` console script."""
    try:
        cli.main(prog_name="longlm")
    except KeyboardInterrupt:  # raised outside a command, e.g. while Click parses
        click.echo("Interrupted.", err=True)
        sys.exit(INTERRUPTED_EXIT_CODE)
