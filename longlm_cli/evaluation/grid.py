"""`longlm eval`: RULER's tasks on the user's own model, per task x length x method, resumable.

Every method answers the same samples (a sample is seeded by its task, length and index, never by the method).
A prompt is the model's chat template around ``context + question`` (or the plain text with ``plain``, as the
paper's runs used), then RULER's answer prefix as the start of the model's turn; the answer is greedy and
scored with RULER's metric. Each finished case is one JSON line in the results file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..defaults import DEFAULT_NO_REPEAT_NGRAM, DEFAULT_PROMPT_STYLE, DEFAULT_REPETITION_PENALTY
from . import ruler
from .grid_prompts import prompt_ids, truncated_ids
from .methods import Setup, answer_greedily, method_record, method_setup, parse_method
from .results import append_result, case_key, kv_dtype_field, load_results, prepare_results

GRID_CASE_FIELDS = (
    "suite",
    "model",
    "task",
    "length",
    "sample",
    "seed",
    "method",
    "W",
    "G",
    "factor",
    "scale_base",
    "template",
    "decoding",  # None: greedy as RULER; else the repetition settings (older records have none: greedy)
    "dtype",  # the weights' and KV cache's dtype the case ran in (older records have none: float32)
    "weights",  # the linear layers' form, --quantize (older records have none: float weights)
    "kv_dtype",  # the KV cache's type when other than dtype (None, and older records: dtype)
)
GRID_RESULT_FIELDS = {
    "score": (int, float),
    "answer": (str,),
    "answers": (list,),
    "tokens": (int,),
    "seconds": (int, float),
    "extended": (bool,),
}


@dataclass(frozen=True)
class GridSettings:
    model: str
    tasks: tuple[str, ...]
    lengths: tuple[int, ...]
    methods: tuple[str, ...]
    samples: int = 10
    seed: int = 0
    plain: bool = False  # no chat template: the plain prompt text, as in the paper's runs (--prompt plain)
    prompt: str = DEFAULT_PROMPT_STYLE  # grid_prompts.PROMPT_STYLES
    window: int | None = None  # for plain `selfextend`: None is the planned W
    group_size: int | None = None
    log_scale: float | None = None  # the base of `+log` methods (--log-scale); None: L, as in the reference
    extend_from: float | None = None  # SelfExtend methods on above this fraction of L; None: beyond L
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY  # greedy decoding's repetition settings
    no_repeat_ngram: int = DEFAULT_NO_REPEAT_NGRAM

    @property
    def style(self) -> str:
        """The prompt style each case records as its ``template``."""
        return "plain" if self.plain else self.prompt

    @property
    def decoding(self) -> str | None:
        """The repetition settings as recorded with each case; None for RULER's plain greedy decoding."""
        parts = []
        if self.repetition_penalty != DEFAULT_REPETITION_PENALTY:
            parts.append(f"repetition_penalty={self.repetition_penalty:g}")
        if self.no_repeat_ngram != DEFAULT_NO_REPEAT_NGRAM:
            parts.append(f"no_repeat_ngram={self.no_repeat_ngram}")
        return ",".join(parts) or None


@dataclass
class GridRun:
    settings: GridSettings
    L: int
    dtype: str  # the loaded model's dtype, recorded with each case
    weights: str = "none"  # the loaded model's weights' form (--quantize), recorded with each case
    kv_dtype: str | None = None  # the KV cache's type when other than dtype (results.kv_dtype_field)
    records: list[dict] = field(default_factory=list)
    resumed: int = 0


def run_grid(
    loaded, settings: GridSettings, *, results_path: Path, on_case: Callable[[dict, int, int], None] | None = None
) -> GridRun:
    """Run every (task, length, sample, method) case not already in ``results_path``, appending each."""
    for method in settings.methods:
        parse_method(method)  # refuse a bad spec before any work
    done = {case_key(r, GRID_CASE_FIELDS): r for r in load_results(results_path, GRID_RESULT_FIELDS)}
    run = GridRun(
        settings=settings,
        L=loaded.context_window,
        dtype=loaded.dtype,
        weights=loaded.weights.form,
        kv_dtype=kv_dtype_field(loaded),
    )
    total = len(settings.tasks) * len(settings.lengths) * settings.samples * len(settings.methods)
    prepare_results(results_path)
    for task in settings.tasks:
        for length in settings.lengths:
            for index in range(settings.samples):
                pending = pending_cases(run, done, task, length, index)
                if not pending:
                    continue
                sample = _sample(loaded.tokenizer, task, length, index, settings.seed)
                answered: dict[tuple, dict] = {}  # methods that run alike here (e.g. all inside L) answer once
                for method, setup, record in pending:
                    alike = (parse_method(method)[0] if setup.extended else None, setup)
                    if alike in answered:
                        record.update(answered[alike])
                    else:
                        _run_case(loaded, sample, method, setup, record, settings)
                        answered[alike] = {k: record[k] for k in (*GRID_RESULT_FIELDS, "depth")}
                    append_result(results_path, record)
                    run.records.append(record)
                    if on_case is not None:
                        on_case(record, len(run.records), total)
    return run


def pending_cases(run: GridRun, done: dict, task: str, length: int, index: int) -> list[tuple[str, Setup, dict]]:
    s = run.settings
    template = s.style
    base = {
        "suite": "ruler",
        "model": s.model,
        "task": task,
        "length": length,
        "sample": index,
        "seed": s.seed,
        "template": template,
        "decoding": s.decoding,
        "dtype": run.dtype,
        "weights": run.weights,
        "kv_dtype": run.kv_dtype,
    }
    pending = []
    for method in s.methods:
        max_new = ruler.MAX_NEW_TOKENS[task]
        setup = method_setup(
            method,
            length,
            L=run.L,
            max_new_tokens=max_new,
            window=s.window,
            group_size=s.group_size,
            log_base=s.log_scale,
            extend_from=s.extend_from,
        )
        record = {**base, "method": method, "W": setup.W, "G": setup.G, "factor": setup.factor}
        record["scale_base"] = setup.scale_base
        key = case_key(record, GRID_CASE_FIELDS)
        if key in done:
            run.records.append(done[key])
            run.resumed += 1
        else:
            pending.append((method, setup, record))
    return pending


def _sample(tokenizer, task: str, length: int, index: int, seed: int) -> ruler.Sample:
    """The index-th sample of a cell: the same for every method."""
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    return ruler.generate(task, count, length, seed=seed * 1_000_003 + index)


def _run_case(loaded, sample: ruler.Sample, method: str, setup: Setup, record: dict, settings: GridSettings) -> None:
    import torch

    style = record["template"]
    if setup.budget is not None:
        ids = truncated_ids(loaded.tokenizer, sample, style=style, budget=setup.budget)
    else:
        ids = prompt_ids(loaded.tokenizer, sample, style=style)
    tensor = torch.tensor([ids], device=next(loaded.model.parameters()).device)
    start = time.perf_counter()
    max_new = ruler.MAX_NEW_TOKENS[sample.task]
    answer = answer_greedily(
        loaded,
        method,
        setup,
        tensor,
        max_new_tokens=max_new,
        repetition_penalty=settings.repetition_penalty,
        no_repeat_ngram_size=settings.no_repeat_ngram,
    )
    record.update(
        answers=list(sample.answers),
        answer=answer,
        score=ruler.score(sample, answer),
        repetition=round(ruler.repetition(answer), 4),
        tokens=len(ids),
        seconds=round(time.perf_counter() - start, 3),
        extended=setup.extended,
        depth=sample.depth,
        **method_record(loaded, method, setup),
    )
