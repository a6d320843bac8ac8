"""Converted copies of GGUF files in the user cache: where each lives, the completion marker that says it is
whole, and making one once, safely.

A copy is written into a temporary directory beside its place and renamed into place only when complete, under
a file lock, so that two first runs at once convert once and an interrupted run never leaves a directory a later
run would use. The marker, written last, records the size and the sha256 of every file written, so a copy damaged
later (truncated, or overwritten inside) is noticed and converted again instead of failing, or answering wrongly,
on every run. Reading every byte at each load would double the read of the weights (16 GB for an 8B model in 16
bits), so a second file, VERIFIED, keeps each file's size, mtime, ctime and inode as last checked: a load reads
the files again only when one of those changed, which any write through the file system does.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..errors import LongLMError, ModelError
from ..models.catalogue import gguf_metadata
from ..paths import (
    cache_dir,
    embedded_gguf_path,
    embedded_model_dir,
    ensure_cache_dir,
    file_lock,
    file_sha256,
    in_form,
    read_own_file,
)
from ..report import note, warn

COMPLETE = ".longlm-complete"  # written last: a converted directory without it is never used
VERIFIED = ".longlm-verified"  # the files' stat when their digests last matched the marker
_LEGACY_MARKER = "ok"  # the marker of the first versions, which recorded nothing
NO_DIGEST = "it was made by an earlier longlm, which kept no digest of its files"


def megabytes(size: int) -> str:
    return f"{size / 1e6:,.{0 if size >= 1e8 else 1}f} MB"


def describe(exc: BaseException, *, typed: bool = True) -> str:
    """The first line of an exception, named by its type unless that is a plain OSError or ValueError. A first
    line that ends in a colon announces the lines after it, which are then joined to it: never a cut-off line."""
    lines = [part.strip() for part in str(exc).splitlines() if part.strip()]
    line = " ".join(lines) if lines and lines[0].endswith(":") else next(iter(lines), "")
    if (not typed or type(exc) in (OSError, ValueError)) and line:
        return line
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def converted_dir_for(gguf: Path, form: str = "none") -> Path:
    """Where a converted copy of a GGUF file lives in the user cache: its 16-bit copy (``form`` none), or its
    copy with int4 or int8 weights (the same name with -int4 or -int8)."""
    if (embedded := embedded_gguf_path()) is not None and gguf.resolve() == embedded.resolve():
        base = embedded_model_dir()
    else:
        stat = gguf.stat()
        key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        base = cache_dir() / "models" / f"{gguf.stem}-{key}"
    return in_form(base, form)


def convert_once(gguf: Path, target: Path, convert: Callable[[], None], problem=None) -> bool:
    """Run ``convert()`` (which makes ``target``, see write_into_place) unless ``target`` is complete and
    whole; return whether it ran. Concurrent runs take turns on a lock file beside the target; the one that
    waited finds the work done. ``problem(target)``, when given, is a further reason to convert again."""

    def why_not(directory: Path) -> str | None:
        return damage(directory) or (problem(directory) if problem else None)

    if (target / COMPLETE).exists() and why_not(target) is None:
        return False
    ensure_cache_dir(target.parent)
    lock = target.with_name(f"{target.name}.lock")
    with file_lock(lock, waiting=f"Waiting for another longlm process converting {gguf.name} into {target}..."):
        if (target / COMPLETE).exists():
            found = why_not(target)
            if found is None:
                return False  # converted by the process we waited for
            if found == NO_DIGEST:
                note(f"converting {gguf.name} again into {target}: {NO_DIGEST}")
            else:
                warn(f"the converted model in {target} is damaged ({found}); converting {gguf.name} again")
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            warn(f"{target} is not a converted model directory; converting {gguf.name} again")
        gguf_metadata(gguf, check_tensors=True)  # a damaged or hostile header: one line, before any reader
        for stale in target.parent.glob(f".{target.name}.*"):  # work directories of killed runs (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        convert()
    return True


def write_into_place(gguf: Path, target: Path, write: Callable[[Path], None]) -> None:
    """``write(work)`` into a temporary directory beside ``target``, marked complete and renamed into place.
    Any failure (but KeyboardInterrupt and longlm's own errors) is one ModelError naming ``gguf``."""
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as exc:
        raise ModelError(f"could not convert the GGUF file {gguf}: {exc.strerror or exc} in {target.parent}") from None
    try:
        write(work)
        write_marker(work)
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            target.unlink()  # something else took the directory's name (we hold the lock): never a lasting break
        elif target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    except BaseException as exc:
        shutil.rmtree(work, ignore_errors=True)
        if isinstance(exc, Exception) and not isinstance(exc, LongLMError):  # never KeyboardInterrupt
            raise ModelError(f"could not convert the GGUF file {gguf}: {describe(exc)}") from exc
        raise


def _file_record(path: Path) -> dict[str, object]:
    return {"size": path.stat().st_size, "sha256": file_sha256(path)}


def _fingerprint(path: Path) -> list[int]:
    """What any write to the file through the file system changes: size, mtime, ctime, inode and device."""
    info = path.stat()
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev]


def write_marker(directory: Path) -> None:
    """Write the completion marker of a converted directory, recording every file in it (and VERIFIED)."""
    files = {
        path.relative_to(directory).as_posix(): _file_record(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name not in (COMPLETE, VERIFIED)
    }
    (directory / COMPLETE).write_text(json.dumps({"files": files}, indent=1) + "\n", encoding="utf-8")
    _write_verified(directory, files)


def _write_verified(directory: Path, files: dict) -> None:
    """Record the files' fingerprints as checked; best effort (a read-only cache is checked in full each load)."""
    temp = directory / f"{VERIFIED}.{os.getpid()}.tmp"
    try:
        stamps = {name: _fingerprint(directory / name) for name in files}
        temp.write_text(json.dumps(stamps) + "\n", encoding="utf-8")
        os.replace(temp, directory / VERIFIED)
    except OSError:
        temp.unlink(missing_ok=True)


def _verified(directory: Path) -> dict:
    try:
        stamps = json.loads(read_own_file(directory / VERIFIED, max_bytes=1 << 20))
        return stamps if isinstance(stamps, dict) else {}
    except (OSError, ValueError):
        return {}


def damage(directory: Path) -> str | None:
    """Why a converted directory that has a completion marker cannot be used; None when it is intact. A file
    whose fingerprint changed since its last check is read in full and its sha256 compared."""
    try:
        text = (directory / COMPLETE).read_text(encoding="utf-8").strip()
        files = {} if text == _LEGACY_MARKER else json.loads(text)["files"]
        if not files or any("sha256" not in record for record in files.values()):
            return NO_DIGEST
        stamps, read_in_full = _verified(directory), False
        for name, record in files.items():
            path = directory / name
            if not path.is_file():
                return f"{name} is missing"
            if stamps.get(name) == _fingerprint(path):
                continue
            read_in_full = True
            found = _file_record(path)
            if found["size"] != record["size"]:
                return f"{name} is {found['size']} bytes, {record['size']} were written"
            if found != record:
                return f"{name} has changed since it was written"
        weights = sorted(directory.glob("*.safetensors"))
        if not weights:
            return "it holds no .safetensors weights"
        damage = next(filter(None, map(_safetensors_damage, weights)), None)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"it cannot be checked: {describe(exc)}"
    if damage is None and read_in_full:  # digests matched again: the files' new fingerprints are checked ones
        _write_verified(directory, files)
    return damage


def _safetensors_damage(path: Path) -> str | None:
    """Whether a safetensors file is as long as its own header says (a truncated copy is shorter)."""
    size = path.stat().st_size
    with path.open("rb") as stream:
        raw = stream.read(8)
        header_size = struct.unpack("<Q", raw)[0] if len(raw) == 8 else size
        if header_size > size - 8:
            return f"{path.name} is truncated ({size} bytes)"
        header = json.loads(stream.read(header_size))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    expected = 8 + header_size + end
    return None if size == expected else f"{path.name} is {size} bytes, its header says {expected}"
