"""Options and help texts shared by several commands, declared once, with defaults from defaults.py."""

from __future__ import annotations

import functools
import math

import click

from ..defaults import (
    DEFAULT_DEVICE,
    DEFAULT_DTYPE,
    DEFAULT_EVAL_SEED,
    DEFAULT_EXTENSION,
    DEFAULT_KV_DTYPE,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MODEL,
    DEFAULT_NO_REPEAT_NGRAM,
    DEFAULT_QUANTIZE,
    DEFAULT_REPETITION_PENALTY,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    DEFAULT_WINDOW_FRACTION,
    DEVICES,
    DTYPES,
    EXTENSION_METHODS,
    KV_DTYPES,
    MAX_GROUP_SIZE,
    MAX_NEW_TOKENS_LIMIT,
    QUANTIZE_CHOICES,
    TASK_SAMPLING_DEFAULTS,
)

MODEL_ENV = "LONGLM_MODEL"  # when set, the default of --model in every command
MODEL_HELP = (
    "Model: 'default' (the embedded SmolLM2-135M-Instruct), a Hugging Face model id, a local model directory "
    "with config.json, or a .gguf file. `plan` also takes family names (llama2, llama3, mistral, qwen2.5, ...). "
    f"Set ${MODEL_ENV} to change the default; -m wins over it."
)
WINDOW_HELP = (
    f"Neighbour window W: the nearest W tokens keep exact positions. Must be below the model's "
    f"pretraining window L.  [default: L // {DEFAULT_WINDOW_FRACTION}]"
)
GROUP_HELP = (
    f"Group size G: distant positions are divided by G (1 to {MAX_GROUP_SIZE}).  [default: the smallest "
    "G >= 2 that puts the farthest grouped position at or below 7/12 of L]"
)
LOG_SCALE_HELP = (
    "While SelfExtend is on, multiply the query at position p by max(1, ln(p + 1) / ln(BASE)), the reference "
    "SelfExtend code's scale_base: attention stays about as sharp far beyond the window as inside it. BASE > 1; "
    "the reference sets it to the pretraining window L.  [default: off]"
)


class _ModelOption(click.Option):
    """--model, defaulting to $LONGLM_MODEL when set; --help shows the default in effect and where it came from."""

    def get_help_extra(self, ctx: click.Context):
        extra = super().get_help_extra(ctx)
        chosen = self.resolve_envvar_value(ctx)
        extra["default"] = f"{chosen}, from ${MODEL_ENV}" if chosen else f"{DEFAULT_MODEL}; ${MODEL_ENV} is not set"
        return extra


model_option = click.option(
    "--model",
    "-m",
    cls=_ModelOption,
    envvar=MODEL_ENV,
    default=DEFAULT_MODEL,
    show_default=True,
    metavar="NAME_OR_PATH",
    help=MODEL_HELP,
)
window_option = click.option("--window", "-w", type=click.IntRange(min=1), metavar="W", help=WINDOW_HELP)
group_option = click.option("--group-size", "-g", type=click.IntRange(1, MAX_GROUP_SIZE), metavar="G", help=GROUP_HELP)


class FiniteFloat(click.FloatRange):
    """A float option that refuses nan and infinity (click's FloatRange lets nan through: it compares False).

    Use it for every float option: ``FiniteFloat()`` or with the bounds of click.FloatRange.
    """

    name = "float"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


extend_from_option = click.option(
    "--extend-from",
    type=FiniteFloat(min=0.0, max=1.0, min_open=True),
    metavar="F",
    help="Switch SelfExtend on once the prompt and the answer exceed this fraction of L, not only beyond L "
    "(the paper: only the first 1/2 .. 2/3 of the positions are well trained).  [default: 1]",
)
log_scale_option = click.option(
    "--log-scale", "log_scale", type=FiniteFloat(min=1.0, min_open=True), metavar="BASE", help=LOG_SCALE_HELP
)


def extension_method_option(help: str):
    """--extension: SelfExtend or Dual Chunk Attention beyond the model's window (``help`` says where it acts)."""
    return click.option(
        "--extension",
        type=click.Choice(EXTENSION_METHODS),
        default=None,
        show_default=f"{DEFAULT_EXTENSION}; dca for a model whose config carries Dual Chunk settings",
        help=help,
    )


def apply_options(options):
    """A decorator applying ``options`` in the order given (see ``apply``)."""
    return lambda command: apply(command, options)


def apply(command, options):
    """Decorate ``command`` with ``options`` in the order given (the first one listed first in --help)."""
    for option in reversed(options):
        command = option(command)
    return command


def choice_option(name: str, choices, default: str, help: str):
    """An option taking one of ``choices``, with its default shown."""
    return click.option(name, type=click.Choice(choices), default=default, show_default=True, help=help)


def count_option(name: str, default: int, help: str, *, most: int | None = None):
    """A whole-number option of at least 1 (and at most ``most``), with its default shown."""
    return click.option(name, type=click.IntRange(min=1, max=most), default=default, show_default=True, help=help)


def loading_options(command):
    """--model, --device, --dtype, --quantize, --kv-dtype, --trust-remote-code: for every command that loads a
    model. The command gets ``model`` and ``loading``, the other five as load_model's keyword arguments."""
    return apply(
        _loading_arguments(command),
        [
            model_option,
            choice_option("--device", DEVICES, DEFAULT_DEVICE, "Where to run: auto picks CUDA when present."),
            choice_option(
                "--dtype",
                DTYPES,
                DEFAULT_DTYPE,
                "Weights dtype: auto is bfloat16 on CUDA and on a CPU with native bf16 where measured faster, else "
                "float32.",
            ),
            choice_option(
                "--quantize",
                QUANTIZE_CHOICES,
                DEFAULT_QUANTIZE,
                "The linear layers' weights: int4 or int8 (CPU; 4 or 8 bits a weight, faster decoding), none (the "
                "model's own), or auto: a GGUF file's own bits (Q4/Q5 in int4, Q6/Q8 in int8), any other model as it "
                "is.",
            ),
            choice_option(
                "--kv-dtype",
                KV_DTYPES,
                DEFAULT_KV_DTYPE,
                "What the KV cache keeps keys and values in: auto is bfloat16 on the CPU (half the memory, faster "
                "decoding; the arithmetic stays in --dtype) and the model's dtype on CUDA.",
            ),
            click.option(
                "--trust-remote-code", is_flag=True, help="Allow model code from the hub to run (off by default)."
            ),
        ],
    )


def _loading_arguments(command):
    """Pass --device, --dtype, --quantize, --kv-dtype and --trust-remote-code to ``command`` as one ``loading``
    dict."""

    @functools.wraps(command)
    def wrapper(*args, device, dtype, quantize, kv_dtype, trust_remote_code, **kwargs):
        loading = dict(
            device=device, dtype=dtype, quantize=quantize, kv_dtype=kv_dtype, trust_remote_code=trust_remote_code
        )
        return command(*args, loading=loading, **kwargs)

    return wrapper


def _log_scale_when_given(command):
    """Pass ``log_scale`` to ``command`` only when --log-scale was given: commands that run without it see the
    same keyword arguments as before the option existed."""

    @functools.wraps(command)
    def wrapper(*args, log_scale=None, **kwargs):
        if log_scale is not None:
            kwargs["log_scale"] = log_scale
        return command(*args, **kwargs)

    return wrapper


def extension_settings(options: dict):
    """ExtensionSettings from the parsed options; a SelfExtend setting given with another --extension is a usage
    error naming the options given."""
    from ..planning.extension import ExtensionSettings

    method = options["extension"]
    if method not in (None, "selfextend"):
        names = {"window": "--window", "group_size": "--group-size", "extend_from": "--extend-from"}
        given = [flag for key, flag in names.items() if options.get(key) is not None]
        given += ["--log-scale"] if options.get("log_scale") is not None else []
        if given:
            raise click.UsageError(f"{', '.join(given)} set SelfExtend; --extension {method} has no such setting")
    return ExtensionSettings.from_options(options)


def extension_options(command):
    """--window, --group-size, --extend-from and --log-scale (the last one reaches the command as ``log_scale``
    when given)."""
    return apply(_log_scale_when_given(command), [window_option, group_option, extend_from_option, log_scale_option])


REPETITION_PENALTY_OPTION = click.option(
    "--repetition-penalty",
    type=FiniteFloat(min=0.0, min_open=True),
    default=DEFAULT_REPETITION_PENALTY,
    show_default=True,
    help="Above 1, makes tokens the answer already used less likely (the document is not counted).",
)
NO_REPEAT_NGRAM_OPTION = click.option(
    "--no-repeat-ngram",
    type=click.IntRange(min=0),
    default=DEFAULT_NO_REPEAT_NGRAM,
    show_default=True,
    metavar="N",
    help="Never repeat a run of N tokens within the answer (0: off).",
)


RUN_NO_REPEAT_NGRAM_OPTION = click.option(  # summarize, ask, chat: the default depends on the command
    "--no-repeat-ngram",
    type=click.IntRange(min=0),
    metavar="N",
    help="Never repeat a run of N tokens within the answer (0: off). "
    f"[default: {TASK_SAMPLING_DEFAULTS['summarize']['no_repeat_ngram_size']} for summarize, "
    f"{DEFAULT_NO_REPEAT_NGRAM} (off) for ask and chat]",
)


# --max-new-tokens, --temperature, --seed, --top-k, --top-p, --repetition-penalty, --no-repeat-ngram, --stop
SAMPLING_OPTIONS = [
    count_option("--max-new-tokens", DEFAULT_MAX_NEW_TOKENS, "Longest answer, in tokens.", most=MAX_NEW_TOKENS_LIMIT),
    click.option(
        "--temperature",
        type=FiniteFloat(min=0.0),
        default=DEFAULT_TEMPERATURE,
        show_default=True,
        help="Sampling temperature; 0 is greedy decoding.",
    ),
    click.option(
        "--seed",
        type=click.IntRange(-(2**63), 2**64 - 1),  # what torch.Generator.manual_seed takes
        help="Random seed for sampling (with --temperature > 0).",
    ),
    click.option(
        "--top-k",
        type=click.IntRange(min=0),
        default=DEFAULT_TOP_K,
        show_default=True,
        help="With --temperature > 0, sample among the K most likely tokens (0: all).",
    ),
    click.option(
        "--top-p",
        type=FiniteFloat(min=0.0, max=1.0, min_open=True),
        default=DEFAULT_TOP_P,
        show_default=True,
        help="With --temperature > 0, sample from the smallest set of tokens holding probability P.",
    ),
    REPETITION_PENALTY_OPTION,
    RUN_NO_REPEAT_NGRAM_OPTION,
    click.option("--stop", multiple=True, metavar="TEXT", help="End the answer before this text (repeatable)."),
]


def sampling_options(command):
    """The options of SamplingSettings (SAMPLING_OPTIONS), for the commands that answer."""
    return apply(command, SAMPLING_OPTIONS)


# --words, --bullets, --language, --instruction, --cite: templates.OutputShape
SHAPE_OPTIONS = [
    click.option("--words", type=click.IntRange(min=1), metavar="N", help="Ask for about N words."),
    click.option("--bullets", is_flag=True, help="Ask for a bulleted list."),
    click.option("--language", metavar="LANGUAGE", help="Ask for the answer in LANGUAGE (e.g. French)."),
    click.option(
        "--instruction",
        metavar="TEXT",
        help="Your own instruction, added after the template's (no prompt file needed).",
    ),
    click.option(
        "--cite",
        is_flag=True,
        help="Ask the model to quote the passages it used, then check each quote against the document "
        "(its page, or NOT IN THE DOCUMENT).",
    ),
]


def shape_options(command):
    """The options of OutputShape (SHAPE_OPTIONS): how the answer should look, without a prompt file."""
    return apply(command, SHAPE_OPTIONS)


# ---------------------------------------------------------------------------------------------------------
# Evaluation commands (passkey, eval)


def list_option(name: str, default: str, metavar: str, help: str, *, dest: str | None = None):
    """A comma-separated list (tasks, methods, lengths, depths) with its default shown; the command parses it."""
    names = (name, dest) if dest else (name,)
    return click.option(*names, default=default, show_default=True, metavar=metavar, help=help)


def lengths_option(default: str):
    return list_option("--lengths", default, "N,N,...", "Prompt lengths in tokens; k means x1024 (4k = 4096 tokens).")


def cases_options(*, lengths: str, count: tuple[str, int, str], seed_for: str, results: str):
    """Which cases a resumable evaluation runs and where they are kept: --lengths, the count per length
    (``count`` = name, default, help), --seed and --results."""
    options = [lengths_option(lengths), count_option(*count), seed_option(seed_for), results_option(results)]
    return lambda command: apply(command, options)


def seed_option(what: str):
    return click.option("--seed", type=int, default=DEFAULT_EVAL_SEED, show_default=True, help=f"Seed for {what}.")


def results_option(default: str):
    return click.option(
        "--results",
        "results_path",
        default=default,
        show_default=True,
        type=click.Path(dir_okay=False),
        metavar="PATH",
        help="One JSON line per finished case; cases already there are skipped (resume).",
    )
