"""Authenticating document-cache entries: a secret of the cache's own and a MAC of each entry's header.

An entry's checksum (``tensor_sha256``) says its tensors were not damaged; it says nothing of who wrote them. A
crafted entry with finite values and a matching checksum (all-zero keys) would be trusted and give a wrong answer
on every run. So each entry's header also carries an HMAC-SHA256, under a secret created once in the cache folder
(readable by its owner only), of every other header field, ``tensor_sha256`` included: only a process that can
read the secret can write an entry that loads. The folder itself must be the user's own and not writable by
others (paths.own_directory), as ssh treats ``~/.ssh``: else the secret guards nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from ..errors import CacheError
from ..paths import read_own_file

SECRET_NAME = ".secret"
SECRET_BYTES = 32
MAC_FIELD = "mac"


def entry_mac(secret: bytes, metadata: dict) -> str:
    """The MAC of an entry's header fields (all but MAC_FIELD), in a canonical order."""
    fields = {k: v for k, v in metadata.items() if k != MAC_FIELD}
    message = json.dumps(fields, sort_keys=True, ensure_ascii=True).encode("ascii")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def signed(metadata: dict, secret: bytes) -> dict:
    """``metadata`` with its MAC."""
    return {**metadata, MAC_FIELD: entry_mac(secret, metadata)}


def is_signed(metadata: dict, secret: bytes) -> bool:
    """Whether ``metadata`` carries the MAC this cache's secret gives it."""
    mac = metadata.get(MAC_FIELD)
    return isinstance(mac, str) and hmac.compare_digest(mac, entry_mac(secret, metadata))


def cache_secret(directory: Path) -> bytes:
    """The secret of the cache in ``directory``, created (owner-only) on first use; two processes creating it at
    once agree on one. A secret file that is not a regular file of the user's own, readable by them alone and of
    the right size, is replaced by a new one: the entries signed with it then fail their check and are rebuilt.
    CacheError when it cannot be written."""
    path = directory / SECRET_NAME
    for _ in range(3):
        found = _read_secret(path)
        if found is not None:
            return found
        try:
            return _new_secret(path, replace=path.is_symlink() or path.exists())
        except FileExistsError:  # another process created it first: read theirs
            continue
    raise CacheError(f"cannot settle the document cache's secret in {directory}")


def _read_secret(path: Path) -> bytes | None:
    """The secret at ``path``; None when there is none or it cannot be trusted (paths.read_own_file, private)."""
    try:
        data = read_own_file(path, SECRET_BYTES, private=True)
    except OSError:
        return None
    return data if len(data) == SECRET_BYTES else None


def _new_secret(path: Path, *, replace: bool) -> bytes:
    """Write a new secret at ``path`` and return it: in place of what is there (never followed) when ``replace``,
    else only where nothing is (FileExistsError otherwise)."""
    secret = secrets.token_bytes(SECRET_BYTES)
    temp = path.with_name(f"{SECRET_NAME}.{os.getpid()}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            os.write(fd, secret)
        finally:
            os.close(fd)
        os.replace(temp, path) if replace else os.link(temp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        raise CacheError(f"cannot write the document cache's secret in {path.parent}: {exc.strerror}") from None
    finally:
        try:
            os.unlink(temp)
        except OSError:
            pass
    return secret
