"""The bytes of one input, read with a size cap, and a clear message for every way a path can fail to open.

Any one input (a document, stdin, a prompt file) is read in chunks and given up at the cap plus one byte
($LONGLM_MAX_INPUT_BYTES, else defaults.DEFAULT_MAX_INPUT_BYTES), so /dev/zero or an endless pipe ends in an
error instead of exhausting memory. A path is opened first and examined afterwards (never checked, then opened),
so a file that vanishes in between is still reported by what the open found. Messages name the input by the
label the caller gives ("notes.txt", "<stdin>", "prompt file 'p.txt'").
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import IO

from ..defaults import DEFAULT_MAX_INPUT_BYTES, MAX_INPUT_BYTES_ENV
from ..environment import bytes_from_env
from ..errors import InputError

CHUNK = 1 << 20  # bytes per read: streams have no size to check up front, so the cap is checked as they come
MIB = 1 << 20


def max_input_bytes() -> int:
    """The per-input cap from $LONGLM_MAX_INPUT_BYTES (bytes), else DEFAULT_MAX_INPUT_BYTES."""
    return bytes_from_env(MAX_INPUT_BYTES_ENV, DEFAULT_MAX_INPUT_BYTES, minimum=1, error=InputError)


def read_stream(stream: IO[bytes], *, label: str, max_bytes: int) -> bytes:
    """Everything ``stream`` holds, read in chunks; InputError as soon as it passes ``max_bytes``."""
    chunks, total = [], 0
    try:
        while chunk := stream.read(min(CHUNK, max_bytes + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise too_large(label, max_bytes)
    except OSError as exc:
        raise InputError(f"{label} cannot be read: {exc.strerror or exc}") from None
    return b"".join(chunks)


def read_path(path: str, *, label: str, max_bytes: int) -> bytes:
    """The bytes of the file at ``path``: a regular file, or a pipe or character device (``<(cmd)``, /dev/stdin)
    read as a stream (a named pipe waits for its writer, as with `cat`). Directories, sockets, block devices and
    anything over ``max_bytes`` raise InputError."""
    if not path:
        raise InputError(f"{label} is an empty path; give a file path")
    file = Path(os.path.expanduser(path))  # Path.expanduser raises for an unknown ~user; this leaves it as is
    try:
        handle = file.open("rb", buffering=0)
    except OSError as exc:
        raise _open_error(exc, file, label) from None
    with handle:
        status = os.fstat(handle.fileno())
        if stat.S_ISBLK(status.st_mode):
            raise InputError(f"{label} is a block device (a disk or partition), not a document; give a file")
        if stat.S_ISREG(status.st_mode) and status.st_size > max_bytes:
            raise too_large(label, max_bytes)
        return read_stream(handle, label=label, max_bytes=max_bytes)


def too_large(label: str, max_bytes: int, *, what: str = "is larger than") -> InputError:
    """The one-line error for an input past the cap; ``what`` says how ("unpacks to more than", ...)."""
    size = f"{max_bytes // MIB:,} MiB" if max_bytes % MIB == 0 else f"{max_bytes:,} bytes"
    return InputError(
        f"{label} {what} the input limit of {size}; set {MAX_INPUT_BYTES_ENV} to a larger number of bytes to read it"
    )


def _open_error(exc: OSError, file: Path, label: str) -> InputError:
    """What an OSError from opening ``file`` means, said plainly (Path.exists() is False for several of these)."""
    if isinstance(exc, FileNotFoundError):
        if file.is_symlink():
            return InputError(f"{label} is a broken symbolic link: its target {_link_target(file)} does not exist")
        return InputError(f"{label} does not exist")
    if exc.errno == errno.ELOOP:
        return InputError(f"{label} is a symbolic link loop (following its links leads back to where they start)")
    if isinstance(exc, NotADirectoryError):
        blocking = next((parent for parent in file.parents if parent.is_file()), None)
        where = f"{blocking} is a file, not a directory" if blocking else "a part of its path is not a directory"
        return InputError(f"{label} does not exist: {where}")
    if isinstance(exc, IsADirectoryError):
        return InputError(f"{label} is a directory; give the files inside it instead")
    if isinstance(exc, PermissionError):
        return InputError(f"{label} cannot be read: permission denied")
    if exc.errno == errno.ENXIO:  # what open() gives for a Unix socket, or a device without a driver
        return InputError(f"{label} is a socket or a device that cannot be read; give a file")
    return InputError(f"{label} cannot be read: {exc.strerror or exc}")


def _link_target(file: Path) -> str:
    try:
        return os.readlink(file)
    except OSError:  # removed in the meantime
        return "(unknown)"
