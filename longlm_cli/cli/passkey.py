"""`longlm passkey`: retrieval beyond the context window, per method, length and depth, resumable."""

from __future__ import annotations

import json

import click

from ..defaults import (
    DEFAULT_EVAL_DEPTHS,
    DEFAULT_EVAL_LENGTHS,
    DEFAULT_EVAL_METHODS,
    DEFAULT_EVAL_NEW_TOKENS,
    DEFAULT_EVAL_RESULTS,
    DEFAULT_EVAL_TASK,
    DEFAULT_EVAL_TRIALS,
    EVAL_TASKS,
)
from .app import cli
from .cases import echo_passkey_case
from .options import cases_options, count_option, extension_options, list_option, loading_options
from .output import check_output, write_output


@cli.command()
@loading_options
@click.option(
    "--task",
    type=click.Choice(EVAL_TASKS),
    default=DEFAULT_EVAL_TASK,
    show_default=True,
    help="passkey: the paper's key hidden in repeated filler. fact: a sentence about a pie's secret "
    "ingredient hidden in real prose (Pride and Prejudice, or --haystack), scored by exact match.",
)
@list_option("--depths", DEFAULT_EVAL_DEPTHS, "D,D,...", "Where the key goes: 0 is the start of the filler, 1 its end.")
@cases_options(
    lengths=DEFAULT_EVAL_LENGTHS,
    count=("--trials", DEFAULT_EVAL_TRIALS, "Random keys per length and depth."),
    seed_for="the random keys",
    results=DEFAULT_EVAL_RESULTS,
)
@list_option(
    "--method",
    DEFAULT_EVAL_METHODS,
    "METHOD[,METHOD]",
    dest="methods",
    help="none (plain model), selfextend, yarn, dynamic (transformers' RoPE scalings for the same "
    "target length), or all of those four; dca (Dual Chunk Attention) when named. Methods other than none only "
    "change anything above L.",
)
@extension_options
@click.option(
    "--haystack",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="Text to hide the fact in (--task fact).  [default: the shipped samples/pride-and-prejudice.txt]",
)
@count_option("--max-new-tokens", DEFAULT_EVAL_NEW_TOKENS, "Answer length in tokens (greedy).")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object (version, settings, every case of this run's grid) instead of the tables.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, allow_dash=True),
    metavar="FILE",
    help="Write the tables (or the JSON) to FILE instead of stdout.",
)
def passkey(model, loading, lengths, depths, methods, results_path, as_json, output, **settings) -> None:
    """Measure retrieval beyond the context window: passkey or fact prompts at given lengths and depths.

    Runs each case on the plain model, with SelfExtend (W and G from `longlm plan` for each length, or
    --window/--group-size) and with transformers' YaRN and dynamic NTK RoPE scaling, then prints one accuracy
    table per method. Progress goes to stderr, one line per case; interrupted runs resume from --results.

    Example: longlm passkey --lengths 4k,8k,16k --depths 0,0.5,1 --trials 2 --method all
    """
    from pathlib import Path

    from ..evaluation.needle import EvalSettings, run_evaluation
    from ..evaluation.options import parse_depths, parse_lengths, parse_methods
    from ..evaluation.tables import evaluation_to_dict, format_tables
    from ..runtime.loader import load_model

    if settings["haystack"] is not None and settings["task"] != "fact":
        raise click.UsageError("--haystack is for --task fact")
    evaluation_settings = EvalSettings(
        model=model,
        lengths=tuple(parse_lengths(lengths)),
        depths=tuple(parse_depths(depths)),
        methods=tuple(parse_methods(methods)),
        **settings,
    )
    check_output(output)
    loaded = load_model(model, tokens=max(evaluation_settings.lengths), **loading)
    evaluation = run_evaluation(loaded, evaluation_settings, results_path=Path(results_path), on_case=echo_passkey_case)
    if evaluation.resumed:
        click.echo(f"{evaluation.resumed} case(s) taken from {results_path} (not run again)", err=True)
    s = evaluation_settings
    tables = format_tables(
        evaluation.records,
        L=evaluation.L,
        lengths=s.lengths,
        depths=s.depths,
        methods=s.methods,
        task=s.task,
        model=loaded.name,
    )
    text = json.dumps(evaluation_to_dict(evaluation, model=loaded.name), indent=2) if as_json else tables
    if output:
        write_output(output, text + "\n")
    else:
        click.echo(text)
