"""The `longlm` command line. Each command parses its options, calls one library function and prints.

Importing this module is cheap: commands that need torch import their engine modules inside the command.
"""

from __future__ import annotations

import json
import sys

import click

from . import __version__
from .defaults import (
    DEFAULT_DEVICE, DEFAULT_DTYPE, DEFAULT_MAX_NEW_TOKENS, DEFAULT_MODEL, DEFAULT_TEMPERATURE, DEFAULT_WINDOW_FRACTION,
    MAX_GROUP_SIZE,
)
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


class Progress:
    """Prefill progress on stderr: tokens done, tokens/s and ETA. Drawn only when stderr is a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.start = None

    def __call__(self, done: int, total: int) -> None:
        import time

        if not self.enabled:
            return
        now = time.perf_counter()
        if self.start is None or done == 0:
            self.start = now
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        width = 30
        bar = "#" * int(width * done / total) + "-" * (width - int(width * done / total))
        click.echo(f"\rReading [{bar}] {done:,}/{total:,} tokens  {rate:,.0f} tok/s  ETA {eta:,.0f}s ",
                   err=True, nl=done >= total)


def _stream(piece: str) -> None:
    """Print a piece of the answer as soon as it is decoded."""
    click.echo(piece, nl=False)
    sys.stdout.flush()


def _echo_plan(plan, loaded, counted: str) -> None:
    """The -v line describing the model and the plan, and the plan's warning if any."""
    mode = f"SelfExtend W={plan.W} G={plan.G}" if plan.needs_extension else "no extension needed"
    click.echo(f"Model {loaded.name} ({loaded.device}, {loaded.dtype}), L={plan.L:,}; {counted} "
               f"N={plan.N:,} tokens; {mode}; capacity {plan.capacity:,} tokens", err=True)
    if plan.warning:
        click.echo(f"Warning: {plan.warning}", err=True)


def _run_options(command):
    """Options shared by summarize and ask."""
    options = [
        click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True, metavar="NAME_OR_PATH",
                     help="Hugging Face model id, local model directory, .gguf file, or 'default' (the embedded "
                     "SmolLM2-135M-Instruct)."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=DEFAULT_DEVICE,
                     show_default=True, help="Where to run: auto picks CUDA when present."),
        click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default=DEFAULT_DTYPE,
                     show_default=True, help="Weights dtype: auto is float32 on CPU, bfloat16 on CUDA."),
        click.option("--window", "-w", type=int, metavar="W", help=WINDOW_HELP),
        click.option("--group-size", "-g", type=int, metavar="G", help=GROUP_HELP),
        click.option("--prompt-file", type=click.Path(dir_okay=False), metavar="PATH",
                     help="Your own prompt template: {document} where the document goes, then the instruction "
                     "({question} for ask)."),
        click.option("--max-new-tokens", type=click.IntRange(min=1), default=DEFAULT_MAX_NEW_TOKENS,
                     show_default=True, help="Longest answer, in tokens."),
        click.option("--temperature", type=click.FloatRange(min=0.0), default=DEFAULT_TEMPERATURE,
                     show_default=True, help="Sampling temperature; 0 is greedy decoding."),
        click.option("--seed", type=int, help="Random seed for sampling (with --temperature > 0)."),
        click.option("--trust-remote-code", is_flag=True, help="Allow model code from the hub to run (off by default)."),
        click.option("--json", "as_json", is_flag=True,
                     help="Print one JSON object: answer, plan, token counts and timings."),
        click.option("--verbose", "-v", is_flag=True, help="Print the plan and timings on stderr."),
        click.option("--no-cache", is_flag=True,
                     help="Neither load nor save the prefilled document in the document cache (`longlm cache`)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _run(task: str, files, question, *, model, device, dtype, window, group_size, prompt_file, max_new_tokens,
         temperature, seed, trust_remote_code, as_json, verbose, no_cache=False) -> None:
    from .doccache import DocCacheSettings
    from .generate import SamplingSettings
    from .reader import ExtensionSettings, ModelSettings, answer_documents

    if not files:
        raise click.UsageError("give at least one document (a file path, or '-' for stdin)")

    def show_plan(plan, loaded) -> None:
        if verbose:
            _echo_plan(plan, loaded, "prompt and answer")

    answer = answer_documents(
        task, files, question=question, prompt_file=prompt_file,
        model=ModelSettings(model=model, device=device, dtype=dtype, trust_remote_code=trust_remote_code),
        extension=ExtensionSettings(window=window, group_size=group_size),
        sampling=SamplingSettings(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed),
        on_text=None if as_json else _stream,
        progress=Progress(enabled=sys.stderr.isatty()),
        on_plan=show_plan,
        cache=DocCacheSettings(enabled=not no_cache),
    )
    if as_json:
        click.echo(json.dumps(answer.to_dict(), indent=2))
    else:
        click.echo()
    if verbose:
        t = answer.timings
        click.echo(f"Prompt {answer.prompt_tokens:,} tokens, answer {answer.new_tokens:,} tokens; load {t['load']:.1f}s, "
                   f"prefill {t['prefill']:.1f}s, decode {t['decode']:.1f}s; document cache {answer.cache}", err=True)


@cli.command()
@click.argument("files", nargs=-1, metavar="FILE...")
@_run_options
def summarize(files, **options) -> None:
    """Summarize one or more documents (PDF, text, Markdown, or '-' for stdin).

    The whole document is read in one forward context; when it is longer than the model's window,
    SelfExtend is switched on with the W and G that `longlm plan` would choose.
    """
    _run("summarize", files, None, **options)


@cli.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.argument("question")
@_run_options
def ask(files, question, **options) -> None:
    """Answer QUESTION about one or more documents (PDF, text, Markdown, or '-' for stdin).

    Example: longlm ask book.txt "Who is the narrator's brother?"
    """
    _run("ask", files, question, **options)


@cli.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@_run_options
@click.option("--budget", type=click.IntRange(min=1), metavar="TOKENS",
              help="Tokens to plan for the conversation beyond the document.  [default: 4 x --max-new-tokens]")
def chat(files, budget, *, model, device, dtype, window, group_size, prompt_file, max_new_tokens, temperature, seed,
         trust_remote_code, as_json, verbose, no_cache) -> None:
    """Ask questions about documents, one after another, reading them only once.

    Each question is answered from the document and the conversation so far. Type a question per line;
    Ctrl-D or /exit leaves. Works with piped input too: printf 'q1\\nq2\\n' | longlm chat doc.txt
    """
    from .chat import ChatSettings, start_chat
    from .doccache import DocCacheSettings
    from .generate import SamplingSettings
    from .reader import ExtensionSettings, ModelSettings

    if "-" in files:
        raise click.UsageError("chat reads questions from stdin; give the documents as files")
    interactive = sys.stdin.isatty()

    def show_plan(plan, loaded) -> None:
        if verbose:
            _echo_plan(plan, loaded, "document and conversation")

    session = start_chat(
        files, prompt_file=prompt_file,
        model=ModelSettings(model=model, device=device, dtype=dtype, trust_remote_code=trust_remote_code),
        extension=ExtensionSettings(window=window, group_size=group_size),
        sampling=SamplingSettings(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed),
        chat=ChatSettings(budget=budget), cache=DocCacheSettings(enabled=not no_cache),
        progress=Progress(enabled=sys.stderr.isatty()), on_plan=show_plan,
    )
    stdin = sys.stdin
    while True:
        if interactive:
            click.echo("> ", nl=False, err=True)
        line = stdin.readline()
        if not line:
            break
        question = line.strip()
        if question == "/exit":
            break
        if not question:
            continue

        turn = session.ask(question, on_text=None if as_json else _stream)
        if as_json:
            click.echo(json.dumps({"question": turn.question, "text": turn.text, "prompt_tokens": turn.prompt_tokens,
                                   "new_tokens": turn.new_tokens, "cache": turn.cache}))
        else:
            click.echo()
        if verbose:
            click.echo(f"Conversation {turn.prompt_tokens:,} tokens, answer {turn.new_tokens:,} tokens, "
                       f"{turn.seconds:.1f}s; document cache {turn.cache}", err=True)


@cli.group()
def cache() -> None:
    """The document cache: prefilled documents saved so that later questions skip re-reading them.

    Entries live in the user cache directory (kv/ under $LONGLM_CACHE_DIR, else ~/.cache/longlm); the least
    recently used are evicted above $LONGLM_CACHE_MAX_BYTES (default 4 GiB).
    """


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


@cache.command("list")
def cache_list() -> None:
    """One line per entry, most recently used first: key prefix, size, last used, source documents."""
    import time

    from .doccache import kv_dir, list_entries

    entries = list_entries()
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.last_used))
        click.echo(f"{e.key[:12]}  {_size(e.size):>10}  {when}  {', '.join(e.sources) or '?'}")
    total = sum(e.size for e in entries)
    click.echo(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {_size(total)} in {kv_dir()}", err=True)


@cache.command("clear")
def cache_clear() -> None:
    """Delete every entry."""
    from .doccache import clear, kv_dir

    removed = clear()
    click.echo(f"Removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} "
               f"({_size(sum(e.size for e in removed))}) from {kv_dir()}")


@cache.command("prune")
@click.option("--max-bytes", type=click.IntRange(min=0), metavar="BYTES",
              help="Keep at most this many bytes.  [default: $LONGLM_CACHE_MAX_BYTES, else 4 GiB]")
def cache_prune(max_bytes) -> None:
    """Delete least-recently-used entries until the cache fits its size limit."""
    from .doccache import kv_dir, prune

    removed = prune(max_bytes=max_bytes)
    click.echo(f"Removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} "
               f"({_size(sum(e.size for e in removed))}) from {kv_dir()}")




@cli.command()
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True, metavar="NAME_OR_PATH",
              help="Hugging Face model id, local model directory, .gguf file, or 'default' (the embedded "
              "SmolLM2-135M-Instruct).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=DEFAULT_DEVICE, show_default=True,
              help="Where to run: auto picks CUDA when present.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default=DEFAULT_DTYPE,
              show_default=True, help="Weights dtype: auto is float32 on CPU, bfloat16 on CUDA.")
@click.option("--task", type=click.Choice(["passkey", "fact"]), default="passkey", show_default=True,
              help="passkey: the paper's key hidden in repeated filler. fact: a sentence about a pie's secret "
              "ingredient hidden in real prose (Pride and Prejudice, or --haystack), scored by exact match.")
@click.option("--lengths", default="4k,8k,16k", show_default=True, metavar="N,N,...",
              help="Prompt lengths in tokens; k means x1024 (4k = 4096 tokens).")
@click.option("--depths", default="0,0.25,0.5,0.75,1", show_default=True, metavar="D,D,...",
              help="Where the key goes: 0 is the start of the filler, 1 its end.")
@click.option("--trials", type=click.IntRange(min=1), default=1, show_default=True,
              help="Random keys per length and depth.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the random keys.")
@click.option("--method", "methods", default="all", show_default=True, metavar="METHOD[,METHOD]",
              help="none (plain model), selfextend, yarn, dynamic (transformers' RoPE scalings for the same "
              "target length), or all. Methods other than none only change anything above L.")
@click.option("--window", "-w", type=int, metavar="W", help=WINDOW_HELP)
@click.option("--group-size", "-g", type=int, metavar="G", help=GROUP_HELP)
@click.option("--haystack", type=click.Path(dir_okay=False), metavar="PATH",
              help="Text to hide the fact in (--task fact).  [default: the shipped samples/pride-and-prejudice.txt]")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=10, show_default=True,
              help="Answer length in tokens (greedy).")
@click.option("--results", "results_path", default="longlm-passkey-results.jsonl", show_default=True,
              type=click.Path(dir_okay=False), metavar="PATH",
              help="One JSON line per finished case; cases already there are skipped (resume).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), metavar="PATH",
              help="Also write every case of this run's grid, with the settings, to PATH as JSON.")
@click.option("--trust-remote-code", is_flag=True, help="Allow model code from the hub to run (off by default).")
def passkey(model, device, dtype, task, lengths, depths, trials, seed, methods, window, group_size, haystack,
            max_new_tokens, results_path, json_path, trust_remote_code) -> None:
    """Measure retrieval beyond the context window: passkey or fact prompts at given lengths and depths.

    Runs each case on the plain model, with SelfExtend (W and G from `longlm plan` for each length, or
    --window/--group-size) and with transformers' YaRN and dynamic NTK RoPE scaling, then prints one accuracy
    table per method. Progress goes to stderr, one line per case; interrupted runs resume from --results.

    Example: longlm passkey --lengths 4k,8k,16k --depths 0,0.5,1 --trials 2 --method all
    """
    from pathlib import Path

    from .evaluate import (
        EvalSettings, evaluation_to_dict, format_tables, parse_depths, parse_lengths, parse_methods, run_evaluation,
    )
    from .models import load_model

    settings = EvalSettings(
        model=model, task=task, lengths=tuple(parse_lengths(lengths)), depths=tuple(parse_depths(depths)),
        trials=trials, seed=seed, methods=tuple(parse_methods(methods)), window=window, group_size=group_size,
        max_new_tokens=max_new_tokens, haystack=haystack,
    )
    if haystack is not None and task != "fact":
        raise click.UsageError("--haystack is for --task fact")
    loaded = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)

    def progress(record, done, total) -> None:
        verdict = "correct" if record["correct"] else "wrong"
        setup = f" W={record['W']} G={record['G']}" if record.get("W") else ""
        setup += f" factor={record['factor']:g}" if record.get("factor") else ""
        click.echo(f"[{done}/{total}] {record['method']}{setup} length={record['length']:,} "
                   f"(tokens {record['tokens']:,}) depth={record['depth']:g} trial={record['trial']}: {verdict} "
                   f"{record['answer'].strip()[:40]!r} ({record['seconds']:.1f}s)", err=True)

    evaluation = run_evaluation(loaded, settings, results_path=Path(results_path), on_case=progress)
    if evaluation.resumed:
        click.echo(f"{evaluation.resumed} case(s) taken from {results_path} (not run again)", err=True)
    click.echo(format_tables(evaluation.records, L=evaluation.L, lengths=settings.lengths, depths=settings.depths,
                             methods=settings.methods, task=task, model=loaded.name))
    if json_path:
        Path(json_path).write_text(json.dumps(evaluation_to_dict(evaluation, model=loaded.name), indent=2) + "\n",
                                   encoding="utf-8")



def main() -> None:
    """Entry point of the `longlm` console script."""
    try:
        cli.main(prog_name="longlm")
    except KeyboardInterrupt:   # raised outside a command, e.g. while Click parses
        click.echo("Interrupted.", err=True)
        sys.exit(INTERRUPTED_EXIT_CODE)


if __name__ == "__main__":
    main()
