"""`longlm chat`'s questions: one per line from a pipe (bytes, checked UTF-8) or typed at a terminal (readline
line editing and a history in the cache directory)."""

from __future__ import annotations

import contextlib
import itertools
import sys

import click

HISTORY_LENGTH = 1000  # chat questions kept in the readline history


def questions(*, interactive: bool):
    """Questions from stdin, one per line, until end of input or /exit; lines with no visible text are skipped.

    Lines are read as bytes and decoded as UTF-8. Bytes that are not UTF-8 become U+FFFD, with one warning for
    that line: the rest of the question is still worth answering. A line over the input cap ends the chat.
    """
    from ..documents.inputs import max_input_bytes, too_large
    from ..documents.text import is_blank

    limit = max_input_bytes()
    lines = _typed_lines() if interactive else _piped_lines(limit)
    for number, question in enumerate(lines, 1):
        if interactive and len(question.encode("utf-8", "surrogatepass")) > limit:
            raise too_large(f"line {number} of stdin", limit)
        question = question.strip()
        if question == "/exit":
            return
        if not is_blank(question):
            yield question


def _piped_lines(limit: int):
    """Lines of a piped stdin, read as bytes (at most ``limit`` + 1 per line) and decoded as UTF-8."""
    from ..documents.inputs import too_large

    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # started with stdin closed
        return
    for number in itertools.count(1):
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            raise too_large(f"line {number} of stdin", limit)
        yield _decode_line(line, number)


def _typed_lines():
    """Lines typed at a terminal, with readline's line editing and a history kept in the cache directory
    (``chat_history``) where the platform has readline. The prompt goes to stderr unless stdout is the terminal
    too, so that answers piped elsewhere stay clean."""
    from ..paths import cache_dir

    try:
        import readline
    except ImportError:  # no readline on this platform: plain input() still works
        readline = None
    history = cache_dir() / "chat_history"
    if readline is not None:
        with contextlib.suppress(OSError):
            readline.read_history_file(history)
    try:
        while True:
            prompt = "> " if sys.stdout.isatty() else ""
            if not prompt:
                click.echo("> ", nl=False, err=True)
            try:
                yield input(prompt)
            except EOFError:
                click.echo(err=True)
                return
    finally:
        if readline is not None:
            with contextlib.suppress(OSError):
                readline.set_history_length(HISTORY_LENGTH)
                history.parent.mkdir(parents=True, exist_ok=True)
                readline.write_history_file(history)


def _decode_line(line: bytes, number: int) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        click.echo(
            f"Warning: line {number} of stdin is not valid UTF-8; the invalid bytes were replaced with U+FFFD", err=True
        )
        return line.decode("utf-8", "replace")
