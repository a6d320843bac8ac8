"""`ask --evidence`: its options, and how the passages an answer was written from are shown (-v)."""

from __future__ import annotations

import click

from ..defaults import AUTO_EVIDENCE_PASSAGES, DEFAULT_EVIDENCE_UNIT
from .options import apply

AUTO = "auto"


class EvidenceCount(click.ParamType):
    """--evidence: a number of passages (0: off), or auto."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == AUTO:
            return value
        text = str(value).strip().lower()
        if text == AUTO:
            return AUTO
        try:
            count = int(text)
        except ValueError:
            count = -1
        if count < 0:
            self.fail(f"{value!r} is neither a number of passages (0 or more) nor 'auto'", param, ctx)
        return count


def evidence_options(command):
    return apply(
        command,
        [
            click.option(
                "--evidence",
                "evidence_passages",
                type=EvidenceCount(),
                default=AUTO,
                show_default=True,
                metavar="N|auto",
                help="Answer from the N passages the question attends to most (found by the model's retrieval "
                "heads over the whole document), in document order, instead of from the whole document. 0: from "
                "the whole document. auto: from 5 sentences (3 paragraphs) when the document exceeds the model's "
                "window and its retrieval heads are known (the embedded model's ship with longlm; another "
                "model's once it has run with --evidence N), else from the whole document.",
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


def evidence_settings(passages: int | str, unit: str):
    from ..answering.evidence import EvidenceSettings

    if passages == AUTO:
        return EvidenceSettings(passages=AUTO_EVIDENCE_PASSAGES[unit], unit=unit, auto=True)
    return EvidenceSettings(passages=int(passages), unit=unit)


def note(message: str) -> None:
    click.echo(f"Note: {message}", err=True)


def echo_evidence(answer, *, auto: bool = False) -> None:
    """-v: the passages the answer was written from, in document order (``auto``: chosen by --evidence auto)."""
    seconds = answer.timings.get("evidence")
    took = "" if seconds is None else f"; the answer from them {seconds:.1f}s to prefill"
    count = len(answer.evidence)
    why = " (--evidence auto: the document exceeds the model's window; --evidence 0 reads it whole)" if auto else ""
    click.echo(f"Evidence: {count} passage{'' if count == 1 else 's'}{why}{took}", err=True)
    for item in answer.evidence:
        page = "" if item.passage.page is None else f", page {item.passage.page}"
        text = " ".join(item.passage.text.split())
        click.echo(f"  [rank {item.rank}{page}, score {item.score:.3f}] {text}", err=True)
