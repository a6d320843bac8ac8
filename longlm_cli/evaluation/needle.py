"""The needle evaluations (passkey and fact): every (length, depth, trial, method) case, on the plain model,
with SelfExtend and with transformers' YaRN and dynamic NTK scalings, each finished case appended to a resumable
results file.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..defaults import DEFAULT_EVAL_NEW_TOKENS, DEFAULT_EVAL_SEED, DEFAULT_EVAL_TASK, DEFAULT_EVAL_TRIALS
from .fact import SAMPLE_HAYSTACK, fact_answer, fact_match, fact_prompt
from .methods import METHODS, Setup, answer_greedily, method_record, method_setup
from .passkey import found_key, passkey_prompt, random_key
from .prompts import EvalPrompt
from .results import append_result, case_key, kv_dtype_field, load_results, prepare_results


@dataclass(frozen=True)
class EvalSettings:
    model: str
    task: str = DEFAULT_EVAL_TASK
    lengths: tuple[int, ...] = (4096, 8192, 16384)
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    trials: int = DEFAULT_EVAL_TRIALS
    seed: int = DEFAULT_EVAL_SEED
    methods: tuple[str, ...] = METHODS
    window: int | None = None
    group_size: int | None = None
    max_new_tokens: int = DEFAULT_EVAL_NEW_TOKENS
    haystack: str | None = None  # fact task: a text file; None is the shipped sample
    log_scale: float | None = None  # SelfExtend's query log-scaling base (--log-scale); None: off
    extend_from: float | None = None  # SelfExtend on above this fraction of L (--extend-from); None: beyond L


@dataclass
class Evaluation:
    settings: EvalSettings
    L: int
    records: list[dict] = field(default_factory=list)  # every case of this run's grid, resumed ones included
    resumed: int = 0


def score(task: str, answer: str, expected: str) -> bool:
    return found_key(answer, expected) if task == "passkey" else fact_match(answer, expected)


def _haystack_text(settings: EvalSettings) -> tuple[str, str]:
    """The fact task's haystack, read like any document (PDF, text in any encoding; binary refused)."""
    from ..documents import read_documents

    path = Path(settings.haystack) if settings.haystack else SAMPLE_HAYSTACK
    return read_documents([str(path)]).text, path.name


def run_evaluation(
    loaded, settings: EvalSettings, *, results_path: Path, on_case: Callable[[dict, int, int], None] | None = None
) -> Evaluation:
    """Run every (length, depth, trial, method) case not already in ``results_path``, appending each."""
    haystack, haystack_name = _haystack_text(settings) if settings.task == "fact" else (None, None)
    done = {case_key(r): r for r in load_results(results_path)}
    evaluation = Evaluation(settings=settings, L=loaded.context_window)
    total = len(settings.lengths) * len(settings.depths) * settings.trials * len(settings.methods)
    prepare_results(results_path)
    for length in settings.lengths:
        setups = {m: _setup(m, length, evaluation.L, settings) for m in settings.methods}
        for depth in settings.depths:
            for trial in range(settings.trials):
                base = {
                    "model": settings.model,
                    "task": settings.task,
                    "haystack": haystack_name,
                    "length": length,
                    "depth": depth,
                    "trial": trial,
                    "seed": settings.seed,
                    "dtype": loaded.dtype,
                    "weights": loaded.weights.form,
                    "kv_dtype": kv_dtype_field(loaded),
                }
                pending = _pending(evaluation, done, base, setups)
                if not pending:
                    continue
                prompt = _prompt(loaded.tokenizer, settings, length, depth, trial, haystack)
                ids = _prompt_ids(loaded, prompt)
                for method, setup, record in pending:
                    _run_case(loaded, settings, prompt, ids, method, setup, record)
                    append_result(results_path, record)
                    evaluation.records.append(record)
                    if on_case is not None:
                        on_case(record, len(evaluation.records), total)
    return evaluation


def _pending(evaluation: Evaluation, done: dict, base: dict, setups: dict) -> list[tuple[str, Setup, dict]]:
    """The cases of one (length, depth, trial) still to run; those in the results file are taken from it."""
    pending = []
    for method, setup in setups.items():
        record = {**base, "method": method, "W": setup.W, "G": setup.G, "factor": setup.factor}
        if setup.scale_base is not None:  # only then: records of earlier runs without it still resume
            record["scale_base"] = setup.scale_base
        if case_key(record) in done:
            evaluation.records.append(done[case_key(record)])
            evaluation.resumed += 1
        else:
            pending.append((method, setup, record))
    return pending


def _prompt(tokenizer, settings: EvalSettings, length: int, depth: float, trial: int, haystack) -> EvalPrompt:
    """The same prompt for every method: its random key or answer is seeded by the case, not the method."""
    count = lambda text: len(tokenizer(text)["input_ids"])  # noqa: E731
    rng = random.Random(f"{settings.seed}:{settings.task}:{length}:{depth}:{trial}")
    if settings.task == "passkey":
        return passkey_prompt(count, length, depth=depth, key=random_key(rng))
    return fact_prompt(count, length, depth=depth, answer=fact_answer(rng), haystack=haystack)


def _prompt_ids(loaded, prompt: EvalPrompt):
    """The prompt's token ids [1, n] on the model's device."""
    import torch

    return torch.tensor([loaded.tokenizer(prompt.text)["input_ids"]], device=next(loaded.model.parameters()).device)


def _setup(method: str, length: int, L: int, settings: EvalSettings) -> Setup:
    # --log-scale BASE log-scales SelfExtend's queries at that base (the engine's `selfextend+log`).
    spec = f"{method}+log" if method == "selfextend" and settings.log_scale is not None else method
    return method_setup(
        spec,
        length,
        L=L,
        max_new_tokens=settings.max_new_tokens,
        window=settings.window,
        group_size=settings.group_size,
        log_base=settings.log_scale,
        extend_from=settings.extend_from,
    )


def _run_case(loaded, settings: EvalSettings, prompt: EvalPrompt, ids, method: str, setup: Setup, record: dict) -> None:
    """Answer ``prompt`` (its ``ids`` [1, n]) with ``method`` and fill ``record`` with the answer and its score."""
    start = time.perf_counter()
    answer = answer_greedily(loaded, method, setup, ids, max_new_tokens=settings.max_new_tokens)
    record.update(
        tokens=int(ids.shape[1]),
        expected=prompt.expected,
        answer=answer,
        correct=score(settings.task, answer, prompt.expected),
        seconds=round(time.perf_counter() - start, 3),
        extended=setup.extended,
        position=round(prompt.position, 4),
        **method_record(loaded, method, setup),
    )
