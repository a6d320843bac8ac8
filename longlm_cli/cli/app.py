"""The `longlm` command group and entry point: every LongLMError becomes one `Error: ...` line, Ctrl-C exit 130."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys

import click

from .. import __version__
from ..errors import LongLMError
from ..report import BARE, LOGGER

INTERRUPTED_EXIT_CODE = 130


class _Interrupted(click.ClickException):
    """Shown as `Interrupted.` on stderr with exit code 130."""

    exit_code = INTERRUPTED_EXIT_CODE

    def __init__(self) -> None:
        super().__init__("Interrupted.")

    def show(self, file=None) -> None:
        click.echo("Interrupted.", err=True)


class _ReportLines(logging.Handler):
    """The library's reports (report.py, logger ``longlm_cli``) as lines on the current stderr: `Warning: ...`,
    `Note: ...`, or a status line as it is."""

    def emit(self, record: logging.LogRecord) -> None:
        text = " ".join(record.getMessage().split())
        if record.levelno >= logging.WARNING:
            text = f"Warning: {text}"
        elif not getattr(record, BARE, False):
            text = f"Note: {text}"
        click.echo(text, err=True)


def _show_library_reports() -> None:
    if not any(isinstance(handler, _ReportLines) for handler in LOGGER.handlers):
        LOGGER.addHandler(_ReportLines(logging.INFO))
        LOGGER.setLevel(logging.INFO)
        LOGGER.propagate = False


_show_library_reports()  # at import too: whatever invokes the commands (CliRunner, the console script) sees them


class LongLMGroup(click.Group):
    """A Click group that reports LongLMError as one line `Error: ...` (exit 1), never a traceback, and the
    library's reports as `Warning: ...` and `Note: ...` lines."""

    def invoke(self, ctx: click.Context):
        _show_library_reports()
        try:
            return super().invoke(ctx)
        except LongLMError as exc:
            raise click.ClickException(" ".join(str(exc).split()) or type(exc).__name__) from None
        except KeyboardInterrupt:
            raise _Interrupted() from None
        except OSError as exc:  # writing the output failed (a full disk, a closed pipe): the library wraps the rest
            raise click.ClickException(_output_failure(exc)) from None


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
    if sys.stdout is None:  # started with its standard output closed (`>&-`)
        click.echo("Error: standard output is closed; longlm has nowhere to write", err=True)
        sys.exit(1)
    # SIGTERM (kill, a closing terminal's job control, timeout) stops longlm as Ctrl-C does: what it was writing
    # (a cache entry, an output file) is removed or finished the way an interrupt leaves it, never half-written.
    with contextlib.suppress(ValueError, OSError, AttributeError):  # not the main thread, or no SIGTERM here
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        cli.main(prog_name="longlm")
    except KeyboardInterrupt:  # raised outside a command, e.g. while Click parses
        click.echo("Interrupted.", err=True)
        sys.exit(INTERRUPTED_EXIT_CODE)
    except SystemExit as done:
        _flush_output(done)
        raise


def _flush_output(done: SystemExit) -> None:
    """Flush what the command wrote while its failure can still be one `Error:` line and exit code 1 (at the
    interpreter's exit it would be a traceback-like report). The standard output then points at the null device,
    so nothing is written twice."""
    try:
        sys.stdout.flush()
    except OSError as exc:
        click.echo(f"Error: {_output_failure(exc)}", err=True)
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        done.code = 1


def _output_failure(exc: OSError) -> str:
    return f"cannot write the output: {exc.strerror or type(exc).__name__}"
