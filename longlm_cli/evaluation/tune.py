"""`longlm tune`: a short sweep on the user's own model at their input length; the winner is saved for
`ask`, `summarize` and `chat` (planning/tuned.py).

The candidates are SelfExtend as planned, SelfExtend with a wider window (W = L/4, G planned for it),
SelfExtend with query log-scaling, and Dual Chunk Attention. Each answers the same samples of RULER tasks (the
`longlm eval` grid, resumable from a results file in the cache directory); the highest mean score wins, ties
going to the earlier candidate (so the planned setting stays unless another one does better). The cost is
estimated before anything runs, from two timed forward passes on the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..defaults import LOG_SCALE_BASE_WINDOWS
from ..errors import PlanError
from ..planning.plan import make_plan
from ..planning.tuned import Tuned, model_key, save_tuned
from . import ruler
from .grid import GridSettings, run_grid
from .methods import parse_method

DEFAULT_TUNE_TASKS = ("niah_multikey_1", "qa_1")
DEFAULT_TUNE_SAMPLES = 3


@dataclass(frozen=True)
class TuneSettings:
    model: str
    length: int
    tasks: tuple[str, ...] = DEFAULT_TUNE_TASKS
    samples: int = DEFAULT_TUNE_SAMPLES
    seed: int = 0


def candidates(L: int, length: int, max_new_tokens: int) -> list[str]:
    """The settings a sweep compares at ``length``, the planned one first."""
    found = ["selfextend"]
    try:
        wide = make_plan(context_window=L, length=length + max_new_tokens, window=L // 4)
        found.append(f"selfextend:{wide.W}x{wide.G}")
    except PlanError:  # a W that cannot cover this length is simply not a candidate
        pass
    return [*found, "selfextend+log", "dca"]


def estimate_seconds(loaded, settings: TuneSettings, methods: list[str]) -> float:
    """Seconds the sweep will take: prefill time at ``length`` from two timed forward passes (a cost that grows
    linearly with position, as in the progress bar), times the cases, plus their answers."""
    import torch

    from ..runtime.cost import fit_cost, remaining_seconds

    model = loaded.model
    ids = torch.randint(0, model.config.vocab_size, (1, 1024), device=next(model.parameters()).device)
    chunks = []
    with torch.inference_mode():
        for n in (512, 1024):
            start = time.perf_counter()
            model(ids[:, :n], use_cache=False, logits_to_keep=1)
            chunks.append((0, n, time.perf_counter() - start))
    cost = fit_cost(chunks) or (chunks[-1][2] / 1024, 0.0)
    per_case = remaining_seconds(cost, 0, settings.length)
    answers = sum(ruler.MAX_NEW_TOKENS[t] for t in settings.tasks) / len(settings.tasks)
    per_case += answers * remaining_seconds(cost, settings.length, settings.length + 1)
    return per_case * len(settings.tasks) * settings.samples * len(methods)


def tune(loaded, settings: TuneSettings, methods: list[str], *, results_path: Path, on_case=None) -> tuple[Tuned, int]:
    """Run the sweep (resuming from ``results_path``), save the winner; returns it and the cases resumed."""
    grid = GridSettings(
        model=settings.model,
        tasks=settings.tasks,
        lengths=(settings.length,),
        methods=tuple(methods),
        samples=settings.samples,
        seed=settings.seed,
    )
    run = run_grid(loaded, grid, results_path=results_path, on_case=on_case)
    scores = {}
    for method in methods:
        cell = [r["score"] for r in run.records if r["method"] == method and r["length"] == settings.length]
        scores[method] = round(100 * sum(cell) / len(cell), 1) if cell else 0.0
    best = max(methods, key=lambda m: (scores[m], -methods.index(m)))
    entry = _entry(best, loaded, settings, scores)
    save_tuned(entry)
    return entry, run.resumed


def _entry(best: str, loaded, settings: TuneSettings, scores: dict) -> Tuned:
    name, W, G = parse_method(best)
    method = "dca" if name == "dca" else "selfextend"
    scale_base = float(LOG_SCALE_BASE_WINDOWS * loaded.context_window) if best.endswith("+log") else None
    return Tuned(
        model=model_key(settings.model),
        length=settings.length,
        method=method,
        window=W,
        group_size=G,
        scale_base=scale_base,
        label=best,
        scores=scores,
        samples=settings.samples,
    )
