"""`longlm chat`'s questions: one per line from a pipe (bytes, checked UTF-8) or typed at a terminal (readline
line editing and a history in the cache directory)."""

from __future__ import annotations

import contextlib
import itertools
import os
import stat
import sys
from pathlib import Path

import click

HISTORY_LENGTH = 1000  # chat questions kept in the readline history
HISTORY_MAX_BYTES = 4 * 1024**2  # a history file larger than this was not written by longlm: not read


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
    kept = readline is not None and _history_readable(history)  # None: neither read nor written
    if kept:
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
        if kept is not None and readline is not None:
            _write_history(readline, history)


def _history_readable(path: Path) -> bool | None:
    """Whether to read the history at ``path``: True for a regular file of at most HISTORY_MAX_BYTES; False when
    there is none yet, or it is larger (one warning: it starts again). None, with one warning, for a symbolic
    link, a fifo or anything else: the history is longlm's own file, and through a link it would load and
    rewrite someone else's; it is then neither read nor written."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        click.echo(f"Warning: the chat history {path} cannot be read ({exc.strerror}); it is not kept", err=True)
        return None
    if not stat.S_ISREG(info.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file"
        click.echo(f"Warning: the chat history {path} is {kind}; it is not read nor written", err=True)
        return None
    if info.st_size > HISTORY_MAX_BYTES:
        click.echo(f"Warning: the chat history {path} is larger than longlm writes it; it starts again", err=True)
        return False
    return True


def _write_history(readline, path: Path) -> None:
    """Keep the last HISTORY_LENGTH lines at ``path``: written to a temporary file, then moved over it, so a
    stopped chat never leaves half a history and a link put there meanwhile is replaced, not followed."""
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(OSError):
        readline.set_history_length(HISTORY_LENGTH)
        path.parent.mkdir(parents=True, exist_ok=True)
        readline.write_history_file(str(temp))
        os.replace(temp, path)
    with contextlib.suppress(OSError):
        temp.unlink(missing_ok=True)


def _decode_line(line: bytes, number: int) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        click.echo(
            f"Warning: line {number} of stdin is not valid UTF-8; the invalid bytes were replaced with U+FFFD", err=True
        )
        return line.decode("utf-8", "replace")
