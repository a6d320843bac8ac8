"""`ask --evidence`: its options, and how the passages an answer was written from are shown (-v)."""

from __future__ import annotations

import click

from ..defaults import DEFAULT_EVIDENCE_PASSAGES, DEFAULT_EVIDENCE_UNIT
from .options import apply


def evidence_options(command):
    return apply(
        command,
        [
            click.option(
                "--evidence",
                "evidence_passages",
                type=click.IntRange(min=0),
                default=DEFAULT_EVIDENCE_PASSAGES,
                metavar="N",
                help="Answer from the N passages the question attends to most (found by the model's retrieval "
                "heads over the whole document), in document order, instead of from the whole document. 0: off.",
            ),
            click.option(
                "--evidence-unit",
                type=click.Choice(["sentence", "paragraph"]),
                default=DEFAULT_EVIDENCE_UNIT,
                show_default=True,
                help="What a passage is for --evidence.",
            ),
        ],
    )


def evidence_settings(passages: int, unit: str):
    from ..answering.evidence import EvidenceSettings

    return EvidenceSettings(passages=passages, unit=unit)


def note(message: str) -> None:
    click.echo(f"Note: {message}", err=True)


def echo_evidence(answer) -> None:
    """-v: the passages the answer was written from, in document order."""
    seconds = answer.timings.get("evidence")
    took = "" if seconds is None else f"; the answer from them {seconds:.1f}s to prefill"
    count = len(answer.evidence)
    click.echo(f"Evidence: {count} passage{'' if count == 1 else 's'}{took}", err=True)
    for item in answer.evidence:
        page = "" if item.passage.page is None else f", page {item.passage.page}"
        text = " ".join(item.passage.text.split())
        click.echo(f"  [rank {item.rank}{page}, score {item.score:.3f}] {text}", err=True)
