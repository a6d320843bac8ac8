"""`longlm plan`: the SelfExtend setting a document needs, without loading the model (and without torch)."""

from __future__ import annotations

import json

import click

from .app import cli
from .options import extend_from_option, group_option, model_option, window_option


@cli.command()
@model_option
@click.option("--length", "-n", type=int, metavar="N", help="Document length in tokens (instead of --file).")
@click.option(
    "--file",
    "-f",
    "files",
    multiple=True,
    type=click.Path(allow_dash=True, readable=False),  # completes file names; the library checks the file
    metavar="PATH",
    help="Document to measure: PDF, text or Markdown file, or '-' for stdin. Repeat to join several "
    "(instead of --length).",
)
@window_option
@group_option
@extend_from_option
@click.option("--no-tuned", is_flag=True, help="Ignore the settings `longlm tune` saved for this model (as ask does).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON instead of text.")
def plan(
    model: str,
    length: int | None,
    files: tuple[str, ...],
    window: int | None,
    group_size: int | None,
    extend_from: float | None,
    no_tuned: bool,
    as_json: bool,
) -> None:
    """Show the SelfExtend setting (W, G) a document needs on a model, without loading the model.

    Give the document length with --length, or a document with --file to count its tokens (with the
    model's own tokenizer.json when it is on disk, else a tiktoken estimate). Prints the pretraining window
    L, the length N, W, G, the extended capacity (L - W) * G + W, and where the farthest grouped position
    W + (N - W) / G falls against the paper's safe range L/2 .. 2L/3. A setting `longlm tune` saved for the
    model near N is used, as ask, summarize and chat use it, unless you set W, G or --extend-from.
    """
    from ..planning.plan import format_report, report_to_dict
    from ..planning.tuned import plan_with_tuned

    if (length is None) == (not files):
        raise click.UsageError("give exactly one of --length and --file")
    report = plan_with_tuned(
        model,
        use_tuned=not no_tuned,
        length=length,
        paths=files,
        window=window,
        group_size=group_size,
        extend_from=extend_from,
    )
    click.echo(json.dumps(report_to_dict(report), indent=2) if as_json else format_report(report))
