"""`longlm tune`: find the best extension setting for your model at your input length, and keep it."""

from __future__ import annotations

import hashlib
import sys

import click

from .app import cli
from .cases import echo_grid_case
from .options import count_option, list_option, loading_options


@cli.command()
@loading_options
@click.option(
    "--length",
    "length_text",
    required=True,
    metavar="N",
    help="The input length to tune for, in tokens (k means x1024): about your documents' length.",
)
@list_option(
    "--tasks", "niah_multikey_1,qa_1", "TASK,...", "RULER tasks to score the candidates on (see `longlm eval --help`)."
)
@count_option("--samples", 3, "Samples per task.")
@click.option("--yes", "-y", is_flag=True, help="Start without asking, after printing the estimate.")
def tune(model, loading, length_text, tasks, samples, yes) -> None:
    """Compare extension settings on your model at your length; save the winner for ask, summarize and chat.

    Candidates: SelfExtend as planned, SelfExtend with a wider window, SelfExtend with query log-scaling, and
    Dual Chunk Attention, each on the same RULER samples. The estimated time is printed first. The winner is
    used for inputs within a factor 1.4 of LENGTH on this model when you set no -w/-g/--log-scale/--extension
    (shown with -v; --no-tuned ignores it). Interrupted sweeps resume.
    """
    from ..evaluation import ruler
    from ..evaluation.options import parse_lengths
    from ..evaluation.tune import TuneSettings, candidates, estimate_seconds
    from ..evaluation.tune import tune as run_tune
    from ..paths import cache_dir
    from ..planning.tuned import model_key
    from ..runtime.loader import load_model
    from .evaluate import parse_tasks

    lengths = parse_lengths(length_text)
    if len(lengths) != 1:
        raise click.BadParameter("give one length", param_hint="--length")
    settings = TuneSettings(model=model, length=lengths[0], tasks=parse_tasks(tasks, ruler.TASKS), samples=samples)
    missing = next((reason for task in settings.tasks if (reason := ruler.data_available(task))), None)
    if missing:
        raise click.UsageError(missing)
    loaded = load_model(model, **loading)
    max_new = max(ruler.MAX_NEW_TOKENS[t] for t in settings.tasks)
    methods = candidates(loaded.context_window, settings.length, max_new)
    cases = len(settings.tasks) * settings.samples * len(methods)
    minutes = estimate_seconds(loaded, settings, methods) / 60
    click.echo(
        f"Tuning {loaded.name} at {settings.length:,} tokens: {', '.join(methods)} on {', '.join(settings.tasks)}, "
        f"{settings.samples} sample(s) each: {cases} cases, about {minutes:,.0f} minutes on {loaded.device}.",
        err=True,
    )
    if not yes:
        if not sys.stdin or not sys.stdin.isatty():
            raise click.UsageError("not starting without --yes (stdin is not a terminal to ask on)")
        click.confirm("Start?", abort=True, err=True)
    key = hashlib.sha256(model_key(model).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    results = cache_dir() / "tune" / f"{key}-{settings.length}.jsonl"
    entry, resumed = run_tune(loaded, settings, methods, results_path=results, on_case=echo_grid_case)
    if resumed:
        click.echo(f"{resumed} case(s) taken from {results} (not run again)", err=True)
    for method in methods:
        click.echo(f"{method:>24}  {entry.scores[method]:5.1f}{'  <- saved' if method == entry.label else ''}")
    click.echo(f"Saved for {loaded.name} near {settings.length:,} tokens; `ask -v` shows it, --no-tuned ignores it.")
