"""The `longlm` command line. Each command parses its options, calls one library function and prints.

Importing this module is cheap: commands that need torch import their engine modules inside the command.
"""

from __future__ import annotations

import json
import sys

import click

from . import __version__
from .defaults import DEFAULT_MODEL, DEFAULT_WINDOW_FRACTION, MAX_GROUP_SIZE
from .errors import LongLMError

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


MODEL_HELP = (
    "Model: a family name (llama2, llama3, mistral, qwen2.5, smollm2, ...; 'default' is the embedded "
    "SmolLM2-135M-Instruct), a local Hugging Face model directory with config.json, or a .gguf file."
)
WINDOW_HELP = (
    f"Neighbour window W: the nearest W tokens keep exact positions. Must be below the model's "
    f"pretraining window L.  [default: L // {DEFAULT_WINDOW_FRACTION}]"
)
GROUP_HELP = (
    f"Group size G: distant positions are divided by G (1 to {MAX_GROUP_SIZE}).  [default: the smallest "
    "G >= 2 that puts the farthest grouped position at or below 7/12 of L]"
)


@cli.command()
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True, metavar="NAME_OR_PATH", help=MODEL_HELP)
@click.option("--length", "-n", type=int, metavar="N", help="Document length in tokens (instead of --file).")
@click.option(
    "--file", "-f", "files", multiple=True, metavar="PATH",
    help="Document to measure: PDF, text or Markdown file, or '-' for stdin. Repeat to join several "
    "(instead of --length).",
)
@click.option("--window", "-w", type=int, metavar="W", help=WINDOW_HELP)
@click.option("--group-size", "-g", type=int, metavar="G", help=GROUP_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON instead of text.")
def plan(model: str, length: int | None, files: tuple[str, ...], window: int | None, group_size: int | None,
         as_json: bool) -> None:
    """Show the SelfExtend setting (W, G) a document needs on a model, without loading the model.

    Give the document length with --length, or a document with --file to count its tokens (with the
    model's own tokenizer.json when it is on disk, else a tiktoken estimate). Prints the pretraining window
    L, the length N, W, G, the extended capacity (L - W) * G + W, and where the farthest grouped position
    W + (N - W) / G falls against the paper's safe range L/2 .. 2L/3.
    """
    from .planning import format_report, plan_for, report_to_dict

    if (length is None) == (not files):
        raise click.UsageError("give exactly one of --length and --file")
    report = plan_for(model, length=length, paths=files, window=window, group_size=group_size)
    click.echo(json.dumps(report_to_dict(report), indent=2) if as_json else format_report(report))


# The `summarize` and `ask` commands are added below by the engine; they import torch inside the command.


def main() -> None:
    """Entry point of the `longlm` console script."""
    try:
        cli.main(prog_name="longlm")
    except KeyboardInterrupt:   # raised outside a command, e.g. while Click parses
        click.echo("Interrupted.", err=True)
        sys.exit(INTERRUPTED_EXIT_CODE)


if __name__ == "__main__":
    main()
