"""SelfExtend planning: choose the neighbour window W and group size G for a document on a model of window L.

Pure Python and cheap to import: no torch, no transformers. The paper (arXiv 2401.01325) asks for
(1/2 .. 2/3) * L > W + (N - W) / G, where N is the sequence length: the farthest grouped position must stay
well inside the positions the model saw in pretraining.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import IO

from ..defaults import (
    DEFAULT_EXTEND_FROM,
    DEFAULT_WINDOW_FRACTION,
    HIGH_FRACTION,
    JSON_VERSION,
    LOW_FRACTION,
    MAX_GROUP_SIZE,
    MIN_WINDOW,
    TARGET_FRACTION,
)
from ..errors import PlanError
from ..models.catalogue import ModelWindow, pretraining_window
from ..models.tokens import TokenCount

_TARGET = Fraction(TARGET_FRACTION).limit_denominator(1000)  # exactly 7/12: no float surprises at the boundary
_HIGH = Fraction(HIGH_FRACTION).limit_denominator(1000)  # exactly 2/3


# ---------------------------------------------------------------------------------------------------------------
# Choosing W and G
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """A SelfExtend setting for a sequence of N tokens on a model pretrained with window L.

    W: neighbour window (exact positions); G: group size (G = 1 means no extension).
    capacity = (L - W) * G + W is the longest sequence these W, G can cover;
    farthest = W + (N - W) / G is the farthest grouped position, to compare with low = L/2 and high = 2L/3.
    """

    L: int
    N: int
    W: int
    G: int
    needs_extension: bool
    capacity: int
    farthest: float
    low: float
    high: float
    reason: str
    warning: str | None = None


def make_plan(
    *,
    context_window: int,
    length: int,
    window: int | None = None,
    group_size: int | None = None,
    extend_from: float | None = None,
) -> Plan:
    """Choose W and G so that the farthest grouped position W + (N - W) / G sits in (1/2 .. 2/3) * L.

    `context_window` is L, `length` is N. Unset `window` defaults to L // DEFAULT_WINDOW_FRACTION; unset
    `group_size` to the smallest G >= 2 putting the farthest position at or below TARGET_FRACTION * L.
    Extension is on when N > `extend_from` * L (None: DEFAULT_EXTEND_FROM, i.e. only beyond L); below that,
    and whenever N <= W, G = 1. Raises PlanError for impossible settings.
    """
    L, N = context_window, length
    fraction = DEFAULT_EXTEND_FROM if extend_from is None else extend_from
    _check_inputs(L, N, window, group_size)
    _check_extend_from(fraction)
    W = window if window is not None else max(1, L // DEFAULT_WINDOW_FRACTION)
    if N <= L and (N <= fraction * L or N <= W or group_size == 1):
        return _plan_without_extension(L, N, W, group_size)
    if group_size is None:
        G, reason = _default_group_size(L, N, W)
    else:
        G, reason = group_size, f"group size G={group_size} as given"
        _check_given_group_size(L, N, W, G)
    window_reason = f"W={W} as given" if window is not None else f"W = L // {DEFAULT_WINDOW_FRACTION} = {W}"
    needed = (
        f"N={N} > L={L}, so SelfExtend is needed"
        if N > L
        else f"N={N} > {fraction:g} x L = {fraction * L:,.0f} (--extend-from), so SelfExtend is on inside L"
    )
    return _build(L, N, W, G, reason=f"{needed}; {window_reason}; {reason}.")


def longest_length(context_window: int, *, window: int | None = None, group_size: int | None = None) -> int:
    """The largest N that make_plan accepts with these settings: what a model of window L can read with them."""
    lo, hi = context_window, context_window * (MAX_GROUP_SIZE + 1)  # lo is accepted, hi is not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            make_plan(context_window=context_window, length=mid, window=window, group_size=group_size)
            lo = mid
        except PlanError:
            hi = mid
    return lo


def _check_extend_from(fraction: float) -> None:
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise PlanError(f"--extend-from {fraction!r} is not valid; it must be a fraction of L above 0, at most 1")


def _check_inputs(L: int, N: int, window: int | None, group_size: int | None) -> None:
    if L < 2:
        raise PlanError(f"pretraining window L={L} is too small; it must be at least 2 tokens")
    if N < 1:
        raise PlanError(f"document length {N} is not valid; it must be at least 1 token")
    if window is not None and window < 1:
        raise PlanError(
            f"window W={window} is not valid; it must be at least 1 (default L // {DEFAULT_WINDOW_FRACTION})"
        )
    if window is not None and window >= L:
        raise PlanError(
            f"window W={window} must be smaller than the pretraining window L={L}; "
            f"choose W between 1 and {L - 1} (default {L // DEFAULT_WINDOW_FRACTION})"
        )
    if group_size is not None and not 1 <= group_size <= MAX_GROUP_SIZE:
        raise PlanError(f"group size G={group_size} is not valid; it must be between 1 and {MAX_GROUP_SIZE}")


def _plan_without_extension(L: int, N: int, W: int, group_size: int | None) -> Plan:
    reason = f"N={N} fits in the pretraining window L={L}, so no extension is needed (G=1)"
    if group_size not in (None, 1):
        reason += f"; the given group size {group_size} is not used"
    return _build(L, N, W, 1, reason=reason + ".")


def _default_group_size(L: int, N: int, W: int) -> tuple[int, str]:
    """Smallest G >= 2 with W + (N - W) / G <= 7L/12 (or 2L/3, or L, when a large W leaves no room below)."""
    for fraction, label in (  # noqa: B007  (label is used after the loop)
        (_TARGET, "7L/12 (the middle of the paper's range L/2 .. 2L/3)"),
        (_HIGH, "2L/3 (W leaves no room below 7L/12)"),
        (Fraction(1), "L (W leaves no room below 2L/3)"),
    ):
        target = fraction * L
        if W < target:
            break
    G = max(2, math.ceil((N - W) / (target - W)))
    if G > MAX_GROUP_SIZE:
        most = math.floor(W + MAX_GROUP_SIZE * (target - W))
        raise PlanError(
            f"document too long: {N} tokens needs G={G} but the largest sensible group size is {MAX_GROUP_SIZE}; "
            f"the most this model can read safely is {most} tokens (L={L}, W={W}); "
            f"use a model with a longer window{_smaller_window_hint(L, W)} or split the document"
        )
    return G, f"G={G} is the smallest group size that keeps the farthest grouped position at or below {label}"


def _smaller_window_hint(L: int, W: int) -> str:
    return ", a smaller --window" if W > L // DEFAULT_WINDOW_FRACTION else ""


def _check_given_group_size(L: int, N: int, W: int, G: int) -> None:
    capacity = (L - W) * G + W
    if N <= capacity:
        return
    needed = math.ceil((N - W) / (L - W))
    if needed > MAX_GROUP_SIZE:
        hint = f"no group size up to {MAX_GROUP_SIZE} fits; use a model with a longer window or split the document"
    else:
        hint = f"use --group-size {needed} or more"
        safe = math.ceil((N - W) / (_TARGET * L - W)) if W < _TARGET * L else MAX_GROUP_SIZE + 1
        if safe <= MAX_GROUP_SIZE:
            hint += f"; G={safe} keeps it at or below 7L/12, the middle of the paper's range"
    raise PlanError(
        f"W={W} and G={G} put the farthest grouped position at {W + (N - W) / G:.1f}, beyond the pretraining "
        f"window L={L}; they allow at most {capacity} tokens but the document has {N}; {hint}"
    )


def _build(L: int, N: int, W: int, G: int, *, reason: str) -> Plan:
    farthest = W + (N - W) / G
    low, high = L * LOW_FRACTION, L * HIGH_FRACTION
    return Plan(
        L=L,
        N=N,
        W=W,
        G=G,
        needs_extension=G > 1,
        capacity=(L - W) * G + W,
        farthest=farthest,
        low=low,
        high=high,
        reason=reason,
        warning=_warning(W, G, farthest, high),
    )


def _warning(W: int, G: int, farthest: float, high: float) -> str | None:
    notes = []
    if G > 1 and farthest > high:
        notes.append(
            f"the farthest grouped position {farthest:.1f} is above 2L/3 = {high:.1f}; the paper keeps it "
            "below 2L/3, so quality may drop; a larger group size is safer"
        )
    if G > 1 and W < MIN_WINDOW:
        notes.append(f"W={W} is below {MIN_WINDOW}; so thin a neighbour window may hurt quality")
    return "; ".join(notes) or None


# ---------------------------------------------------------------------------------------------------------------
# From a model and a document to a plan, and back to text
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanReport:
    """Everything `longlm plan` shows: the model's window, the token count (None when given), and the plan."""

    model: ModelWindow
    plan: Plan
    tokens: TokenCount | None
    sources: tuple[str, ...] = ()
    tuned: str | None = None  # the `longlm tune` setting the plan follows, described (tuned.plan_with_tuned)


def plan_for(
    model: str,
    *,
    length: int | None = None,
    paths: Sequence[str] = (),
    window: int | None = None,
    group_size: int | None = None,
    extend_from: float | None = None,
    stdin: IO[bytes] | None = None,
) -> PlanReport:
    """Plan SelfExtend for `model` and either a known `length` in tokens or the documents at `paths`.

    Exactly one of `length` and `paths` must be given. Documents are read with documents.read_documents and
    counted with tokens.count_tokens. Raises LongLMError subclasses on any problem.
    """
    if (length is None) == (not paths):
        raise PlanError("give either a length in tokens or documents to read, not both and not neither")
    model_window = pretraining_window(model)
    tokens: TokenCount | None = None
    sources: tuple[str, ...] = ()
    if length is None:
        from ..documents import read_documents
        from ..models.tokens import count_tokens

        document = read_documents(paths, stdin=stdin)
        tokens, sources = count_tokens(document.text, model=model), document.sources
        length = tokens.count
    plan = make_plan(
        context_window=model_window.L, length=length, window=window, group_size=group_size, extend_from=extend_from
    )
    return PlanReport(model=model_window, plan=plan, tokens=tokens, sources=sources)


def format_plan(plan: Plan, *, model_label: str, tokens: TokenCount | None = None) -> str:
    """Describe `plan` for a person: L, N, W, G, the extended capacity and where the farthest position falls."""
    estimate = " (estimate)" if tokens is not None and not tokens.exact else ""
    rows = [
        ("Model", model_label),
        ("Pretraining window L", f"{plan.L:,} tokens"),
        ("Document length N", f"{plan.N:,} tokens{estimate}"),
    ]
    if tokens is not None:
        rows.append(("Counted with", tokens.method))
    rows += [
        ("Neighbour window W", f"{plan.W:,} tokens"),
        ("Group size G", str(plan.G)),
        ("Extended capacity", f"{plan.capacity:,} tokens  ((L - W) * G + W)"),
        ("Farthest position", f"{_number(plan.farthest)}  (W + (N - W) / G; {_placement(plan)})"),
        ("Paper's range", f"L/2 = {_number(plan.low)} .. 2L/3 = {_number(plan.high)}"),
    ]
    lines = [f"{label + ':':<22}{value}" for label, value in rows]
    lines += ["", plan.reason]
    if plan.warning:
        lines.append(f"Warning: {plan.warning}.")
    return "\n".join(lines)


def _placement(plan: Plan) -> str:
    if not plan.needs_extension:
        return "within L, no extension needed"
    if plan.farthest < plan.low:
        return "below L/2: safe, more grouping than strictly needed"
    if plan.farthest <= plan.high:
        return "inside the paper's range L/2 .. 2L/3"
    return "above 2L/3 but within L: risky"


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def plan_to_dict(plan: Plan, *, model_label: str, tokens: TokenCount | None = None) -> dict[str, object]:
    """Return the plan as a JSON-ready dict (for `--json`)."""
    return {
        "model": model_label,
        **asdict(plan),
        "length_exact": tokens.exact if tokens is not None else True,
        "length_method": tokens.method if tokens is not None else "given",
    }


def report_label(report: PlanReport) -> str:
    """The model line `longlm plan` prints: the name and where L came from."""
    return f"{report.model.name} (L from {report.model.source})"


def format_report(report: PlanReport) -> str:
    """Describe a PlanReport for a person (format_plan with the model's label, and the inputs read)."""
    text = format_plan(report.plan, model_label=report_label(report), tokens=report.tokens)
    if report.sources:
        text = f"{'Documents:':<22}{', '.join(report.sources)}\n" + text
    if report.tuned:
        text = f"{'Tuned:':<22}{report.tuned}\n" + text
    return text


def report_to_dict(report: PlanReport) -> dict[str, object]:
    """Return a PlanReport as a JSON-ready dict (plan_to_dict plus the model's window source and the inputs)."""
    data = plan_to_dict(report.plan, model_label=report.model.name, tokens=report.tokens)
    extra = {"L_source": report.model.source, "sources": list(report.sources), "tuned": report.tuned}
    return {"version": JSON_VERSION, **data, **extra}
