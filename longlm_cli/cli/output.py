"""Where a command's output goes: stdout, or -o/--output FILE written whole (checked before any work)."""

from __future__ import annotations

import os

import click


def check_output(output: str | None, inputs=()) -> None:
    """Refuse, before any work, an --output path that could not be written at the end, or that is one of the
    ``inputs`` (the answer would replace the document it answers)."""
    from pathlib import Path

    from ..errors import InputError
    from ..evaluation.results import check_writable

    if output is None or output == "-":
        return
    for source in inputs:
        if source != "-" and _same_file(output, source):
            raise InputError(f"--output {output} is the input {source}: the answer would replace the document")
    check_writable(Path(output), option="--output")


def _same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name one file (links and other spellings included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # either does not exist (yet): not the same file
        return False


def write_output(output: str, text: str) -> None:
    """Write ``text`` to ``output`` whole or not at all (a temporary file renamed into place)."""
    from ..errors import InputError

    # Only a regular file (or a new one) is replaced atomically: renaming a temporary file over a device such as
    # /dev/stdout or a fifo would replace the device itself.
    atomic = output != "-" and (not os.path.lexists(output) or os.path.isfile(output))
    try:
        with click.open_file(output, "w", encoding="utf-8", atomic=atomic) as out:
            out.write(text)
    except OSError as exc:
        raise InputError(f"cannot write --output {output}: {exc.strerror or exc}") from None
