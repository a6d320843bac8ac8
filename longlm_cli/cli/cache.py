"""`longlm cache list|clear|prune`: the document cache as a user sees it."""

from __future__ import annotations

import re
import time

import click

from ..paths import human_size
from .app import cli

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1: ESC starts terminal escape sequences
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # undecodable bytes of a file name; unprintable in UTF-8


@cli.group()
def cache() -> None:
    """The document cache: prefilled documents saved so that later questions skip re-reading them.

    Entries live in the user cache directory (kv/ under $LONGLM_CACHE_DIR, else ~/.cache/longlm); the least
    recently used are evicted above $LONGLM_CACHE_MAX_BYTES (default 4 GiB).
    """


def _entries(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


def _printable(text: str) -> str:
    """Text from an entry (its file name, its sources: untrusted) safe for a terminal; printable Unicode is kept."""
    return _SURROGATE.sub("\ufffd", _CONTROL.sub("", text))


def _when(timestamp: float) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
    except (OverflowError, ValueError, OSError):  # an mtime set far outside what the platform's time_t holds
        return "?"


def _echo_removed(removed, directory) -> None:
    click.echo(f"Removed {_entries(len(removed))} ({human_size(sum(e.size for e in removed))}) from {directory}")


@cache.command("list")
def cache_list() -> None:
    """One line per entry, most recently used first: key prefix, size, last used, source documents.

    Only regular files are entries: a directory, symlink or fifo at an entry's name is not listed.
    """
    from ..doccache.store import kv_dir, list_entries, unfinished_saves

    entries = list_entries()
    for e in entries:
        sources = _printable(", ".join(e.sources)) or "?"
        click.echo(f"{_printable(e.key[:12])}  {human_size(e.size):>10}  {_when(e.last_used)}  {sources}")
    total = sum(e.size for e in entries)
    click.echo(f"{_entries(len(entries))}, {human_size(total)} in {kv_dir()}", err=True)
    unfinished = unfinished_saves()
    if unfinished:
        size = human_size(sum(size for _, size in unfinished))
        click.echo(
            f"and {len(unfinished)} unfinished save(s) ({size}): interrupted, or running now; "
            "`longlm cache clear` removes them",
            err=True,
        )


@cache.command("clear")
def cache_clear() -> None:
    """Delete every entry."""
    from ..doccache.store import clear, kv_dir

    _echo_removed(clear(), kv_dir())


@cache.command("prune")
@click.option(
    "--max-bytes",
    type=click.IntRange(min=0),
    metavar="BYTES",
    help="Keep at most this many bytes.  [default: $LONGLM_CACHE_MAX_BYTES, else 4 GiB]",
)
def cache_prune(max_bytes) -> None:
    """Delete least-recently-used entries until the cache fits its size limit."""
    from ..doccache.store import kv_dir, prune

    _echo_removed(prune(max_bytes=max_bytes), kv_dir())
