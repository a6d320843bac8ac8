"""`longlm summarize`, `longlm ask` and `longlm chat`: options, the prefill progress line, the streamed answer."""

from __future__ import annotations

import json
import os
import sys

import click

from .app import cli
from .cases import dca_phrase
from .evidence import echo_evidence, evidence_options, evidence_settings, note
from .options import (
    apply,
    extension_method_option,
    extension_options,
    extension_settings,
    loading_options,
    sampling_options,
    shape_options,
)
from .output import check_output, write_output
from .progress import Progress
from .questions import questions

# A document argument: a path (so that shell completion completes files) or '-' for stdin. Nothing is checked
# here; the library reports a missing or unreadable document in its own words.
DOCUMENT = click.Path(allow_dash=True, readable=False)
ASK_USAGE = "longlm ask FILE... QUESTION"


def _stream(piece: str) -> None:
    """Print a piece of the answer as soon as it is decoded."""
    click.echo(piece, nl=False)
    sys.stdout.flush()


def _plan_echo(verbose: bool, counted: str):
    """The on_plan callback: with -v, which inputs were read in an encoding other than UTF-8 (so a wrong guess
    can be noticed), the line describing the model and the plan, and the plan's warning."""

    def show(prepared) -> None:
        if not verbose:
            return
        plan, loaded, document = prepared.plan, prepared.loaded, prepared.document
        for source, encoding in zip(document.sources, document.encodings):
            if encoding not in (None, "utf-8"):
                click.echo(f"Read {source} as {encoding}", err=True)
        if prepared.tuned is not None:
            click.echo(f"Using longlm tune's {prepared.tuned.describe()}; --no-tuned ignores it", err=True)
        method = prepared.extension.method_on(plan)
        if method == "dca":
            click.echo(
                f"Model {loaded.name} ({loaded.setup}), L={plan.L:,}; {counted} "
                f"N={plan.N:,} tokens; {_dca_mode(loaded.model.config, plan.L)}",
                err=True,
            )
            _echo_weights(loaded)
            return
        mode = f"SelfExtend W={plan.W} G={plan.G}" if method else "no extension needed"
        click.echo(
            f"Model {loaded.name} ({loaded.setup}), L={plan.L:,}; {counted} "
            f"N={plan.N:,} tokens; {mode}; capacity {plan.capacity:,} tokens",
            err=True,
        )
        _echo_weights(loaded)
        if plan.warning:
            click.echo(f"Warning: {plan.warning}", err=True)

    return show


def _echo_weights(loaded) -> None:
    """-v: the weights' form when quantized (and why), and what the weights and the KV cache take."""
    if loaded.weights.form != "none":
        click.echo(f"Weights {loaded.weights.reason}", err=True)
    if loaded.memory:
        click.echo(loaded.memory, err=True)


def _dca_mode(config, L: int) -> str:
    from ..engine.methods import dca_settings

    return f"Dual Chunk Attention, {dca_phrase(dca_settings(config, L))}"


def _run_options(command):
    """Options shared by summarize, ask and chat."""
    command = apply(
        command,
        [
            click.option(
                "--prompt-file",
                type=click.Path(dir_okay=False),
                metavar="PATH",
                help="Your own prompt template: {document} where the document goes, then the instruction "
                "({question} for ask).",
            ),
            click.option(
                "--json", "as_json", is_flag=True, help="Print one JSON object: answer, plan, token counts and timings."
            ),
            extension_method_option(
                "What runs when the document exceeds the model's window: SelfExtend (-w, -g, --log-scale), "
                "or Dual Chunk Attention (ChunkLlama; no settings to choose)."
            ),
            click.option(
                "--no-tuned",
                is_flag=True,
                help="Ignore the settings `longlm tune` saved for this model (used when you set none yourself).",
            ),
            click.option("--verbose", "-v", is_flag=True, help="Print the plan and timings on stderr."),
            click.option(
                "--output",
                "-o",
                type=click.Path(dir_okay=False, allow_dash=True),
                metavar="FILE",
                help="Write the answer (or with --json the JSON) to FILE instead of stdout; chat writes every "
                "finished turn there and still shows them.",
            ),
            click.option(
                "--no-cache",
                is_flag=True,
                help="Neither load nor save the prefilled document in the document cache (`longlm cache`).",
            ),
        ],
    )
    return loading_options(extension_options(sampling_options(shape_options(command))))


def _settings(options: dict, *, prompt_file: str | None, on_plan=None) -> dict:
    """The library's settings objects, each built from the shared options it declares: how the documents are
    read and run (``reading``), sampling and the document cache."""
    from ..answering.pipeline import ModelSettings, Reading
    from ..answering.templates import OutputShape
    from ..doccache.store import DocCacheSettings
    from ..runtime.sampling import SamplingSettings

    reading = Reading(
        prompt_file=prompt_file,
        shape=OutputShape.from_options(options),
        model=ModelSettings.from_options(options),
        extension=extension_settings(options),
        on_plan=on_plan,
    )
    sampling, cache = SamplingSettings.from_options(options), DocCacheSettings.from_options(options)
    return dict(reading=reading, sampling=sampling, cache=cache)


def _checked_quotes(answer) -> str:
    """What follows a streamed answer: a newline, then with --cite the checked quotes."""
    from ..answering.citations import format_citations

    return "" if answer.citations is None else "\n\n" + format_citations(list(answer.citations))


def _as_text(answer) -> str:
    """An answer (or chat turn) as text: the answer, then with --cite the checked quotes."""
    return answer.text + _checked_quotes(answer)


def _run(
    task: str, files, question, *, prompt_file, as_json, verbose, output, each=False, evidence=None, **options
) -> None:
    from ..answering.answer import answer_documents
    from ..answering.templates import check_question

    if not files:
        raise click.UsageError("give at least one document (a file path, or '-' for stdin)")
    if question is not None:
        check_question(question)
    check_output(output, (*files, *([prompt_file] if prompt_file else [])))
    more = {} if evidence is None else {"evidence": evidence, "on_note": note}
    if each:
        _run_each(task, files, question, prompt_file=prompt_file, as_json=as_json, output=output, **more, **options)
        return
    with Progress(enabled=sys.stderr.isatty()) as progress:
        answer = answer_documents(
            task,
            files,
            question=question,
            **_settings(options, prompt_file=prompt_file, on_plan=_plan_echo(verbose, "prompt and answer")),
            on_text=None if as_json or output else _stream,
            progress=progress,
            **more,
        )
    if output:
        write_output(output, (json.dumps(answer.to_dict(), indent=2) if as_json else _as_text(answer)) + "\n")
    elif as_json:
        click.echo(json.dumps(answer.to_dict(), indent=2))
    else:
        click.echo(_checked_quotes(answer))
    if answer.empty_warning:
        click.echo(f"Warning: {answer.empty_warning}", err=True)
    if verbose:
        t = answer.timings
        click.echo(
            f"Prompt {answer.prompt_tokens:,} tokens, answer {answer.new_tokens:,} tokens; "
            f"load {t['load']:.1f}s, "
            f"prefill {t['prefill']:.1f}s, decode {t['decode']:.1f}s; document cache {answer.cache}",
            err=True,
        )
        if answer.evidence is not None:
            echo_evidence(answer, auto=evidence is not None and evidence.auto)


def _run_each(task: str, files, question, *, prompt_file, as_json, output, evidence=None, on_note=None, **options):
    """--each: one answer per document, the model loaded once. Text: each answer under a `### FILE` line;
    --json: one JSON line per document. A document that cannot be answered is one `Error:` line (and, with
    --json, a JSON line with its error); the others still run, and the exit status is then 1."""
    from ..answering.answer import Failed, answer_each

    pieces, failures = [], 0
    with Progress(enabled=sys.stderr.isatty()) as progress:
        more = {} if evidence is None else {"evidence": evidence, "on_note": on_note}
        settings = _settings(options, prompt_file=prompt_file)
        for result in answer_each(task, files, question=question, progress=progress, **settings, **more):
            if isinstance(result, Failed):
                failures += 1
                click.echo(f"Error: {result.source}: {result.error}", err=True)
            elif result.empty_warning:
                click.echo(f"Warning: {result.sources[0]}: {result.empty_warning}", err=True)
            if as_json:
                piece = json.dumps(result.to_dict())
            elif isinstance(result, Failed):
                continue
            else:
                piece = f"### {result.sources[0]}\n\n{_as_text(result)}\n"
            pieces.append(piece)
            if output:  # rewritten whole after each document: the file holds every finished one
                write_output(output, "\n".join(pieces) + "\n")
            else:
                click.echo(piece)
    if failures:
        raise click.exceptions.Exit(1)


def _stdin_is_piped() -> bool:
    """Whether stdin is a pipe or a file rather than a terminal (False when it is closed)."""
    try:
        return sys.stdin is not None and not sys.stdin.isatty()
    except (ValueError, OSError):  # a closed stream
        return False


def _ask_arguments(args: tuple[str, ...]) -> tuple[tuple[str, ...], str]:
    """(documents, question) from ask's arguments FILE... QUESTION: the last one is the question.

    A lone argument is the question of a document piped to stdin, unless it is '-' or names an existing path:
    then the question is what is missing.
    """
    if len(args) >= 2:
        return args[:-1], args[-1]
    piped = _stdin_is_piped()
    if len(args) == 1 and piped and args[0] != "-" and not os.path.lexists(args[0]):
        return ("-",), args[0]
    missing = "QUESTION" if args or piped else "FILE and QUESTION"
    raise click.UsageError(f"missing {missing}: {ASK_USAGE}")


EACH_OPTION = click.option(
    "--each",
    is_flag=True,
    help="Answer for each FILE on its own, the model loaded once (with --json: one JSON line per file).",
)


@cli.command()
@click.argument("files", nargs=-1, type=DOCUMENT, metavar="[FILE...]")
@_run_options
@EACH_OPTION
def summarize(files, **options) -> None:
    """Summarize one or more documents (PDF, text, Markdown, or '-' for stdin).

    The whole document is read in one forward context; when it is longer than the model's window,
    SelfExtend is switched on with the W and G that `longlm plan` would choose.

    With no FILE, a document piped to stdin is read: cat notes.txt | longlm summarize
    """
    _run("summarize", files or (("-",) if _stdin_is_piped() else ()), None, **options)


@cli.command()
@click.argument("args", nargs=-1, type=DOCUMENT, metavar="FILE... QUESTION")
@_run_options
@EACH_OPTION
@evidence_options
def ask(args, evidence_passages, evidence_unit, **options) -> None:
    """Answer QUESTION about one or more documents (PDF, text, Markdown, or '-' for stdin).

    Example: longlm ask book.txt "Who is the narrator's brother?"

    With only QUESTION, a document piped to stdin is read: cat book.txt | longlm ask "Who is the narrator?"
    """
    files, question = _ask_arguments(args)
    _run("ask", files, question, evidence=evidence_settings(evidence_passages, evidence_unit), **options)


@cli.command()
@click.argument("files", nargs=-1, required=True, type=DOCUMENT, metavar="FILE...")
@_run_options
@click.option(
    "--budget",
    type=click.IntRange(min=1),
    metavar="TOKENS",
    help="Tokens to plan for the conversation beyond the document.  [default: 4 x --max-new-tokens]",
)
@evidence_options
def chat(files, budget, evidence_passages, evidence_unit, *, prompt_file, as_json, verbose, output, **options):
    """Ask questions about documents, one after another, reading them only once.

    Each question is answered from the document and the conversation so far. Type a question per line;
    Ctrl-D or /exit leaves. Works with piped input too: printf 'q1\\nq2\\n' | longlm chat doc.txt
    """
    from ..answering.chat import ChatSettings, start_chat

    if "-" in files:
        raise click.UsageError("chat reads questions from stdin; give the documents as files")
    check_output(output, files)
    evidence = evidence_settings(evidence_passages, evidence_unit)
    with Progress(enabled=sys.stderr.isatty()) as progress:
        session = start_chat(
            files,
            **_settings(options, prompt_file=prompt_file, on_plan=_plan_echo(verbose, "document and conversation")),
            chat=ChatSettings(budget=budget),
            evidence=evidence,
            on_note=note,
            progress=progress,
        )
        _converse(session, as_json=as_json, verbose=verbose, output=output, auto_evidence=evidence.auto)


def _converse(session, *, as_json: bool, verbose: bool, output: str | None, auto_evidence: bool = False) -> None:
    """Answer each question from stdin in turn: the answer on stdout (streamed, or one JSON line)."""
    transcript = []
    for question in questions(interactive=sys.stdin is not None and sys.stdin.isatty()):
        turn = session.ask(question, on_text=None if as_json else _stream)
        if as_json:
            click.echo(json.dumps(turn.to_dict()))
        else:
            click.echo(_checked_quotes(turn))
        if output:  # rewritten whole after each turn: the file always holds every finished turn
            transcript.append(json.dumps(turn.to_dict()) if as_json else f"Q: {turn.question}\nA: {_as_text(turn)}")
            write_output(output, ("\n" if as_json else "\n\n").join(transcript) + "\n")
        if verbose:
            click.echo(
                f"Conversation {turn.prompt_tokens:,} tokens, answer {turn.new_tokens:,} tokens, "
                f"{turn.seconds:.1f}s; document cache {turn.cache}",
                err=True,
            )
            if turn.evidence is not None:
                echo_evidence(turn, auto=auto_evidence)
