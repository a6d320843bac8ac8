"""Retrieval heads: which attention heads of a model look at an inserted fact when asked about it, measured.

A sample is the fact task's prompt (evaluation/fact.py: a sentence about a pie's secret ingredient placed in
the shipped novel) inside the model's window, so the model runs plainly. Its question tokens are tapped
(engine/evidence.py); a head's score is the share of the question's attention, averaged over its rows and the
samples, that lands on the fact sentence's tokens. Heads that retrieve point at the fact whatever the text
around it; the others spread their attention over the first tokens and the question's own. Samples vary the
depth, the part of the novel and the answer, by seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..answering.evidence import EvidenceSettings, Head, document_tokens
from ..answering.templates import chat_token_ids
from .fact import FACT_LINE, FACT_QUESTION, SAMPLE_HAYSTACK, fact_answer, fact_prompt

DEFAULT_HEAD_SAMPLES = 8
HEAD_MEASURE_TOKENS = 2048  # at most; half the window for a model whose window is shorter
MIN_MEASURE_TOKENS = 512  # the fact prompt needs room for some prose around its fact (tiny test models)
HAYSTACK_STARTS = 40  # the novel's text is cut at this many places to vary the prose around the fact


@dataclass(frozen=True)
class HeadScores:
    """scores[layer][head]: the share of the question's attention on the fact, averaged over ``samples``."""

    length: int
    samples: int
    scores: tuple[tuple[float, ...], ...]

    def best(self, k: int) -> list[Head]:
        """The ``k`` heads with the highest scores, best first."""
        every = [(s, (layer, head)) for layer, row in enumerate(self.scores) for head, s in enumerate(row)]
        return [head for _, head in sorted(every, key=lambda e: -e[0])[:k]]


def measure_heads(
    loaded,
    *,
    length: int,
    samples: int = DEFAULT_HEAD_SAMPLES,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> HeadScores:
    """Score every attention head of ``loaded`` (a runtime LoadedModel, running plainly) on ``samples`` fact
    prompts of ``length`` tokens (within its window)."""
    from ..engine.methods import detach

    detach(loaded.model)  # inside the window: the plain model
    tokenizer = loaded.tokenizer
    haystack = SAMPLE_HAYSTACK.read_text(encoding="utf-8")
    totals: Any = None  # the sum of the samples' [layers, heads] tensors so far
    for n in range(samples):
        shares = _sample_shares(loaded, haystack, length, seed + n, tokenizer)
        totals = shares if totals is None else totals + shares
        if progress is not None:
            progress(n + 1, samples)
    mean = totals / samples  # [layers, heads]
    return HeadScores(length=length, samples=samples, scores=tuple(tuple(row) for row in mean.tolist()))


def _sample_shares(loaded, haystack: str, length: int, seed: int, tokenizer):
    """[layers, heads]: the share of the question rows' attention on the fact's tokens, for one sample."""
    import torch

    from ..engine.evidence import AttentionTap, tapping
    from ..runtime.generate import Session, prefill

    rng = random.Random(seed)
    answer = fact_answer(rng)
    start = rng.randrange(HAYSTACK_STARTS) * len(haystack) // (2 * HAYSTACK_STARTS)
    text = haystack[start:]
    count = lambda t: len(chat_token_ids(tokenizer, t))  # noqa: E731
    prompt = fact_prompt(count, length, depth=rng.uniform(0.05, 0.95), answer=answer, haystack=text)
    ids = chat_token_ids(tokenizer, prompt.text)
    placed = document_tokens(tokenizer, prompt.text, ids)
    assert placed is not None  # the fact prompt's text is its own tokens: a tokenizer with offsets places them
    fact_at = prompt.text.index(FACT_LINE.format(answer=answer))
    fact_end = fact_at + len(FACT_LINE.format(answer=answer))
    question_at = prompt.text.rindex(FACT_QUESTION)
    rows_from = min((p for p, c in placed.placed.items() if c >= question_at), default=placed.rows_from)
    fact_tokens = torch.tensor([p for p, c in placed.placed.items() if fact_at <= c < fact_end])
    tap = AttentionTap(start=rows_from, stop=len(ids))
    session = Session.start(loaded.model, reserve=len(ids))
    with tapping(loaded.model, tap):
        prefill(session, torch.tensor([ids], device=loaded.device))
    rows = len(ids) - rows_from
    layers = sorted(tap.received)
    return torch.stack([tap.received[layer][:, fact_tokens].sum(dim=1) / rows for layer in layers]).cpu()


def prepared_heads(prepared, count: int, *, on_note: Callable[[str], None] | None = None) -> list[Head]:
    """The best ``count`` retrieval heads of a prepared answer's model (heads_for), its plan's method switched back
    on afterwards (measuring runs the model plainly)."""
    from ..answering.pipeline import configure

    heads = heads_for(prepared.loaded, prepared.requested_model, on_note=on_note)[:count]
    configure(prepared.loaded.model, prepared.plan, prepared.extension)
    return heads


def known_heads(loaded, requested: str) -> list[Head] | None:
    """The retrieval heads of the model ``requested`` known without measuring: its entry in heads.json, or the ones
    that ship for the embedded model; None when neither."""
    from ..answering.headstore import EMBEDDED_HEADS, find_heads
    from ..models.architecture import text_config
    from ..models.catalogue import is_embedded
    from ..planning.tuned import model_key

    config = text_config(loaded.model.config)
    stored = find_heads(model_key(requested), config.num_hidden_layers, config.num_attention_heads)
    if stored is not None:
        return list(stored.heads)
    return list(EMBEDDED_HEADS.heads) if is_embedded(requested) else None


def evidence_for(prepared, evidence: EvidenceSettings) -> EvidenceSettings:
    """``evidence`` as it applies to a prepared answer: ``auto`` keeps its passages when the prompt exceeds the
    model's window and the model's retrieval heads are known (auto never measures them), else none."""
    if not evidence.auto:
        return evidence
    use = prepared.plan.needs_extension and known_heads(prepared.loaded, prepared.requested_model) is not None
    return replace(evidence, passages=evidence.passages if use else 0, auto=False)


def heads_for(loaded, requested: str, *, on_note: Callable[[str], None] | None = None) -> list[Head]:
    """The retrieval heads of the model ``requested`` (loaded as ``loaded``), best first: as measured before
    (heads.json), the ones that ship for the embedded model, or measured now and kept. Measuring runs the model
    plainly: the caller switches its method back on afterwards."""
    from ..answering.headstore import MAX_KEPT, StoredHeads, save_heads
    from ..planning.tuned import model_key

    key = model_key(requested)
    known = known_heads(loaded, requested)
    if known is not None:
        return known
    length = max(MIN_MEASURE_TOKENS, min(HEAD_MEASURE_TOKENS, loaded.context_window // 2))
    if on_note is not None:
        on_note(
            f"measuring which attention heads find facts in this model ({DEFAULT_HEAD_SAMPLES} texts of "
            f"{length:,} tokens; once, kept for later runs)"
        )
    scores = measure_heads(loaded, length=length, samples=DEFAULT_HEAD_SAMPLES)
    best = scores.best(MAX_KEPT)
    save_heads(StoredHeads(model=key, length=length, samples=scores.samples, heads=tuple(best)))
    return best
