"""What the evaluation commands (eval, passkey, tune) print on stderr as each case finishes, and how the CLI
names a method's settings there and in `-v`."""

from __future__ import annotations

import click


def dca_phrase(dca: dict) -> str:
    """Dual Chunk Attention's settings (engine.methods.dca_settings) as -v and evaluation progress lines say them."""
    return (
        f"chunks of {dca['chunk_len']:,} tokens "
        f"(chunk size {dca['chunk_size']:,}, local window {dca['local_window']:,})"
    )


def describe_setup(record: dict) -> str:
    """The settings of a finished evaluation case, for its progress line: ' W=.. G=..', ' factor=..', Dual Chunk
    Attention's ' chunks of ..' (dca_phrase) or ''."""
    setup = f" W={record['W']} G={record['G']}" if record.get("W") else ""
    dca = record.get("dca")
    if isinstance(dca, dict) and {"chunk_len", "chunk_size", "local_window"} <= set(dca):
        setup += f" {dca_phrase(dca)}"
    return setup + (f" factor={record['factor']:g}" if record.get("factor") else "")


def echo_case(record: dict, done: int, total: int, *, where: str, cell: str, outcome: str) -> None:
    """One progress line on stderr for a finished case: its method and settings (``where`` names what precedes
    them), its length, ``cell`` (which sample), ``outcome`` and the answer's start."""
    click.echo(
        f"[{done}/{total}] {where}{describe_setup(record)} length={record['length']:,} "
        f"(tokens {record['tokens']:,}) {cell}: {outcome} {record['answer'].strip()[:40]!r} "
        f"({record['seconds']:.1f}s)",
        err=True,
    )


def echo_grid_case(record: dict, done: int, total: int) -> None:
    """A RULER case of eval or tune."""
    where, outcome = f"{record['task']} {record['method']}", f"score {record['score']:.2f}"
    echo_case(record, done, total, where=where, cell=f"sample={record['sample']}", outcome=outcome)


def echo_passkey_case(record: dict, done: int, total: int) -> None:
    """A passkey or fact case."""
    cell = f"depth={record['depth']:g} trial={record['trial']}"
    outcome = "correct" if record["correct"] else "wrong"
    echo_case(record, done, total, where=record["method"], cell=cell, outcome=outcome)
