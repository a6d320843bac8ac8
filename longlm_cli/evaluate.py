"""Retrieval evaluation beyond the pretraining window: passkey and fact ("needle") prompts, run on the plain
model, with SelfExtend, and with transformers' own training-free RoPE scalings (YaRN, dynamic NTK).

Every finished case is appended as one JSON line to a results file; a later run with the same settings skips
the cases already there, so a long evaluation can be interrupted and resumed.
"""

from __future__ import annotations

import copy
import json
import random
import re
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import InputError, LongLMError, UnsupportedModelError
from .passkey import FILLER, KEY_LINE, QUESTION, TASK, found_key, random_key

LENGTH_UNIT = 1024  # "4k" is 4 * 1024 = 4096 tokens
METHODS = ("none", "selfextend", "yarn", "dynamic")
TASKS = ("passkey", "fact")
DEFAULT_EVAL_NEW_TOKENS = 10
DEFAULT_RESULTS = "longlm-passkey-results.jsonl"
SAMPLE_NAME = "pride-and-prejudice.txt"


def sample_haystack() -> Path:
    """The shipped novel: installed as package data (longlm_cli.samples), or samples/ in a source checkout."""
    checkout = Path(__file__).resolve().parent.parent / "samples" / SAMPLE_NAME
    if checkout.is_file():
        return checkout
    from importlib import resources

    try:
        return Path(str(resources.files("longlm_cli.samples").joinpath(SAMPLE_NAME)))
    except ModuleNotFoundError:
        return checkout


SAMPLE_HAYSTACK = sample_haystack()

FILLER_SENTENCES = tuple(s.strip() + "." for s in FILLER.split(".") if s.strip())

FACT_INTRO = ("There is an important fact hidden inside a long text. Find it and memorize it. "
              "I will ask you about it.")
FACT_LINE = "The secret ingredient of the baker's famous pie is {answer}."
FACT_QUESTION = ("Question: What is the secret ingredient of the baker's famous pie?\n"
                 "Answer: The secret ingredient of the baker's famous pie is")
FACT_ANSWERS = ("cardamom", "saffron", "nutmeg", "tarragon", "lavender", "rosemary", "fenugreek", "allspice",
                "marjoram", "turmeric", "aniseed", "caraway")

CountFn = Callable[[str], int]


# ---------------------------------------------------------------------------------------------------------
# Parsing the option values


def parse_lengths(text: str) -> list[int]:
    """'4k,8k,16000' -> [4096, 8192, 16000]: a k suffix multiplies by 1024."""
    lengths = []
    for part in (p.strip().lower() for p in text.split(",")):
        match = re.fullmatch(r"(\d+(?:\.\d+)?)(k?)", part)
        if not match:
            raise LongLMError(f"bad length {part!r}: give token counts like 4k,8k,16000 (k = 1024)")
        value = float(match.group(1)) * (LENGTH_UNIT if match.group(2) else 1)
        if value < 1 or value != int(value):
            raise LongLMError(f"bad length {part!r}: it must be a whole number of tokens >= 1")
        lengths.append(int(value))
    return lengths


def parse_depths(text: str) -> list[float]:
    depths = []
    for part in (p.strip() for p in text.split(",")):
        try:
            depth = float(part)
        except ValueError:
            raise LongLMError(f"bad depth {part!r}: give fractions between 0 and 1, like 0,0.5,1") from None
        if not 0.0 <= depth <= 1.0:
            raise LongLMError(f"bad depth {part!r}: depths are fractions between 0 (start) and 1 (end)")
        depths.append(depth)
    return depths


def parse_methods(text: str) -> list[str]:
    names = [p.strip().lower() for p in text.split(",") if p.strip()]
    if "all" in names:
        return list(METHODS)
    for name in names:
        if name not in METHODS:
            raise LongLMError(f"unknown method {name!r}; choose from {', '.join(METHODS)} or all")
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------------------------------------------------
# Prompts


@dataclass(frozen=True)
class EvalPrompt:
    text: str
    expected: str
    depth: float     # requested depth
    position: float  # actual fraction of the filler or haystack text that comes before the key or fact


def _closest(assemble, count: CountFn, length: int, start: int, per_unit: float, limit: int):
    """The unit count n in [0, limit] whose assembled prompt is closest to ``length`` tokens."""
    seen: dict[int, int] = {}

    def tokens(n: int) -> int:
        if n not in seen:
            seen[n] = count(assemble(n)[0])
        return seen[n]

    n = min(limit, max(0, start))
    for _ in range(6):  # Newton-like steps on an almost linear function
        step = round((length - tokens(n)) / per_unit)
        if step == 0:
            break
        n = min(limit, max(0, n + step))
    for _ in range(limit + 1):  # then walk to the best neighbour
        best = min((m for m in (n - 1, n, n + 1) if 0 <= m <= limit), key=lambda m: (abs(tokens(m) - length), m))
        if best == n:
            break
        n = best
    return n


def _check_room(fixed: int, length: int) -> None:
    if fixed > length + 4:
        raise LongLMError(f"a {length:,}-token prompt is too short: the task, key and question alone take "
                          f"{fixed:,} tokens with this tokenizer")


def passkey_prompt(count: CountFn, length: int, *, depth: float, key: str) -> EvalPrompt:
    """The SelfExtend paper's passkey prompt, about ``length`` tokens long, key line at ``depth``.

    The filler is the paper's line cut into its five sentences, so the length can be matched to a few tokens;
    a whole number of filler lines gives exactly the paper's text.
    """
    def assemble(n: int):
        before = round(n * depth)
        units = [FILLER_SENTENCES[i % len(FILLER_SENTENCES)] for i in range(n)]
        text = " ".join([TASK, *units[:before], KEY_LINE.format(key=key), *units[before:], QUESTION])
        return text, before

    fixed = count(assemble(0)[0])
    per_unit = max(1.0, (count(assemble(50)[0]) - fixed) / 50)
    _check_room(fixed, length)
    n = _closest(assemble, count, length, round((length - fixed) / per_unit), per_unit, limit=10**7)
    text, before = assemble(n)
    return EvalPrompt(text=text, expected=key, depth=depth, position=before / n if n else depth)


def fact_answer(rng: random.Random) -> str:
    return rng.choice(FACT_ANSWERS)


_SENTENCE_END = re.compile(r"[.!?][\"')\]_]*\s+|\n\s*\n")


def fact_prompt(count: CountFn, length: int, *, depth: float, answer: str, haystack: str) -> EvalPrompt:
    """A fact sentence placed at ``depth`` inside the start of ``haystack`` (real prose), then the question.

    The haystack is cut at a word boundary to fit ``length`` tokens; the fact goes in at the sentence boundary
    nearest to ``depth`` of the text used.
    """
    fact = FACT_LINE.format(answer=answer)
    words = [m.start() for m in re.finditer(r"\s+", haystack)] + [len(haystack)]  # possible cut points

    def assemble(n: int):
        body = haystack[: words[n - 1]].rstrip() if n else ""
        target = depth * len(body)
        bounds = [0, len(body), *(m.end() for m in _SENTENCE_END.finditer(body))]
        at = min(bounds, key=lambda b: (abs(b - target), b))
        pieces = [body[:at].rstrip(), fact, body[at:].lstrip()]
        middle = " ".join(p for p in pieces if p)
        return f"{FACT_INTRO}\n\n{middle}\n\n{FACT_QUESTION}", (at / len(body) if body else depth)

    fixed = count(assemble(0)[0])
    _check_room(fixed, length)
    sample = haystack[: words[min(len(words), 2000) - 1]]
    per_word = max(0.1, count(sample) / max(1, min(len(words), 2000)))
    limit = len(words)
    n = _closest(assemble, count, length, round((length - fixed) / per_word), per_word, limit=limit)
    text, position = assemble(n)
    if n == limit and count(text) < length - 8:
        raise InputError(f"the haystack text is too short for a {length:,}-token prompt; give a longer one "
                         f"with --haystack")
    return EvalPrompt(text=text, expected=answer, depth=depth, position=position)


# ---------------------------------------------------------------------------------------------------------
# Scoring


def _normal_words(text: str) -> list[str]:
    words = re.sub(r"[^a-z0-9']+", " ", text.lower().replace("\u2019", "'")).split()
    while words and words[0] in ("a", "an", "the"):
        words = words[1:]
    return words


def fact_match(answer: str, expected: str) -> bool:
    """Exact match: the answer, normalized, starts with the expected words, normalized.

    Normalizing lowercases, turns everything but letters, digits and apostrophes into spaces, splits into
    words and drops leading articles (a, an, the). "Cardamom." and "cardamom, of course" match "cardamom";
    "I think cardamom" and "cardamoms" do not.
    """
    want = _normal_words(expected)
    return bool(want) and _normal_words(answer)[: len(want)] == want


def score(task: str, answer: str, expected: str) -> bool:
    return found_key(answer, expected) if task == "passkey" else fact_match(answer, expected)


# ---------------------------------------------------------------------------------------------------------
# Training-free RoPE scalings from transformers


def _rotary_owner(model):
    inner = getattr(model, "model", None)
    if inner is None or getattr(inner, "rotary_emb", None) is None:
        raise UnsupportedModelError(f"{type(model).__name__} has no model.rotary_emb module; YaRN and dynamic "
                                    f"NTK scaling need a RoPE model")
    return inner


@contextmanager
def rope_scaling(model, rope_type: str, *, factor: float, context_window: int):
    """Run the model with transformers' ``yarn`` or ``dynamic`` RoPE scaling, then restore it exactly.

    The text config's ``rope_parameters`` are set for ``factor`` (target length / L) and the model's rotary
    embedding module is replaced by a new instance of the same class built from that config. On exit the
    original module instance and the original ``rope_parameters`` come back.
    """
    if rope_type not in ("yarn", "dynamic"):
        raise LongLMError(f"unknown RoPE scaling {rope_type!r}")
    owner = _rotary_owner(model)
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    original_params = config.rope_parameters
    params = copy.deepcopy(original_params)
    if not isinstance(params, dict) or "rope_theta" not in params:
        raise UnsupportedModelError("YaRN and dynamic scaling are only set up for one global rope_parameters "
                                    "section; this model has per-layer RoPE settings")
    if params.get("rope_type", "default") != "default":
        raise UnsupportedModelError(f"the model already uses rope type {params['rope_type']!r}; YaRN and dynamic "
                                    f"scaling are compared only on plain RoPE models")
    new = {"rope_type": rope_type, "factor": float(factor), "rope_theta": params["rope_theta"]}
    if "partial_rotary_factor" in params:
        new["partial_rotary_factor"] = params["partial_rotary_factor"]
    if rope_type == "yarn":
        new["original_max_position_embeddings"] = int(context_window)
    original_module = owner.rotary_emb
    device = next(iter(original_module.buffers()), None)
    try:
        config.rope_parameters = new
        module = type(original_module)(config=config)
        if device is not None:
            module = module.to(device.device)
        owner.rotary_emb = module
        yield new
    finally:
        owner.rotary_emb = original_module
        config.rope_parameters = original_params


# ---------------------------------------------------------------------------------------------------------
# Running cases


@dataclass(frozen=True)
class EvalSettings:
    model: str
    task: str = "passkey"
    lengths: tuple[int, ...] = (4096, 8192, 16384)
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    trials: int = 1
    seed: int = 0
    methods: tuple[str, ...] = METHODS
    window: int | None = None
    group_size: int | None = None
    max_new_tokens: int = DEFAULT_EVAL_NEW_TOKENS
    haystack: str | None = None  # fact task: a text file; None is the shipped sample


@dataclass
class Setup:
    """How one method runs at one length: SelfExtend's W and G, or a RoPE scaling factor."""

    extended: bool
    W: int | None = None
    G: int | None = None
    factor: float | None = None


def method_setup(method: str, length: int, *, L: int, settings: EvalSettings) -> Setup:
    from .planning import make_plan

    target = length + settings.max_new_tokens
    if method == "none" or target <= L:
        return Setup(extended=False)
    if method == "selfextend":
        plan = make_plan(context_window=L, length=target, window=settings.window, group_size=settings.group_size)
        return Setup(extended=True, W=plan.W, G=plan.G)
    return Setup(extended=True, factor=round(target / L, 4))


def case_key(record: dict) -> tuple:
    return tuple(record.get(k) for k in ("model", "task", "haystack", "method", "length", "depth", "trial", "seed",
                                         "W", "G", "factor"))


def load_results(path: Path) -> list[dict]:
    """The cases in a results file; unreadable lines (a run killed mid-write) are skipped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _haystack_text(settings: EvalSettings) -> tuple[str, str]:
    path = Path(settings.haystack) if settings.haystack else SAMPLE_HAYSTACK
    if not path.is_file():
        raise InputError(f"haystack file {str(path)!r} does not exist")
    return path.read_text(encoding="utf-8", errors="replace"), path.name


@dataclass
class Evaluation:
    settings: EvalSettings
    L: int
    records: list[dict] = field(default_factory=list)  # every case of this run's grid, resumed ones included
    resumed: int = 0


def run_evaluation(loaded, settings: EvalSettings, *, results_path: Path,
                   on_case: Callable[[dict, int, int], None] | None = None) -> Evaluation:
    """Run every (length, depth, trial, method) case not already in ``results_path``, appending each."""
    import torch

    from .selfextend import apply_selfextend, remove_selfextend

    tokenizer, model, L = loaded.tokenizer, loaded.model, loaded.context_window
    haystack, haystack_name = _haystack_text(settings) if settings.task == "fact" else (None, None)
    done = {case_key(r): r for r in load_results(results_path)}
    evaluation = Evaluation(settings=settings, L=L)
    total = len(settings.lengths) * len(settings.depths) * settings.trials * len(settings.methods)
    count = lambda text: len(tokenizer(text)["input_ids"])  # noqa: E731
    results_path.parent.mkdir(parents=True, exist_ok=True)
    if results_path.exists() and results_path.stat().st_size:
        with results_path.open("rb+") as out:  # a run killed mid-line: start the next record on a new line
            out.seek(-1, 2)
            if out.read(1) != b"\n":
                out.write(b"\n")
    for length in settings.lengths:
        setups = {m: method_setup(m, length, L=L, settings=settings) for m in settings.methods}
        for depth in settings.depths:
            for trial in range(settings.trials):
                base = {"model": settings.model, "task": settings.task, "haystack": haystack_name, "length": length,
                        "depth": depth, "trial": trial, "seed": settings.seed}
                pending = []
                for method in settings.methods:
                    setup = setups[method]
                    record = {**base, "method": method, "W": setup.W, "G": setup.G, "factor": setup.factor}
                    if case_key(record) in done:
                        evaluation.records.append(done[case_key(record)])
                        evaluation.resumed += 1
                    else:
                        pending.append((method, setup, record))
                if not pending:
                    continue
                rng = random.Random(f"{settings.seed}:{settings.task}:{length}:{depth}:{trial}")
                if settings.task == "passkey":
                    prompt = passkey_prompt(count, length, depth=depth, key=random_key(rng))
                else:
                    prompt = fact_prompt(count, length, depth=depth, answer=fact_answer(rng), haystack=haystack)
                ids = torch.tensor([tokenizer(prompt.text)["input_ids"]], device=next(model.parameters()).device)
                for method, setup, record in pending:
                    start = time.perf_counter()
                    if method == "selfextend" and setup.extended:
                        apply_selfextend(model, group_size=setup.G, window=setup.W)
                        scaling, chunk = None, None  # the CLI's chunked prefill, as `ask` runs it
                    else:
                        remove_selfextend(model)
                        scaling = method if method in ("yarn", "dynamic") and setup.extended else None
                        # One pass: transformers' SDPA then runs the causal kernel without a mask (a chunk after
                        # the first needs an explicit mask, a slower path: engine.py (a) vs (a')), and
                        # dynamic NTK rotates every prompt key with the same frequencies.
                        chunk = ids.shape[1]
                    try:
                        context = (rope_scaling(model, scaling, factor=setup.factor, context_window=L)
                                   if scaling else nullcontext())
                        with context:
                            answer = greedy_answer(model, tokenizer, ids, max_new_tokens=settings.max_new_tokens,
                                                   chunk=chunk)
                    finally:
                        remove_selfextend(model)
                    record.update(tokens=int(ids.shape[1]), expected=prompt.expected, answer=answer,
                                  correct=score(settings.task, answer, prompt.expected),
                                  seconds=round(time.perf_counter() - start, 3), extended=setup.extended,
                                  position=round(prompt.position, 4))
                    with results_path.open("a", encoding="utf-8") as out:
                        out.write(json.dumps(record) + "\n")
                    evaluation.records.append(record)
                    if on_case is not None:
                        on_case(record, len(evaluation.records), total)
    return evaluation


def greedy_answer(model, tokenizer, ids, *, max_new_tokens: int = DEFAULT_EVAL_NEW_TOKENS,
                  chunk: int | None = None) -> str:
    """The greedy answer to the prompt ``ids`` [1, n] from a fresh KV cache (prefilled in ``chunk``-token
    pieces; None is the CLI's default chunk)."""
    from .generate import SamplingSettings, Session, decode, prefill

    session = Session.start(model)
    logits = prefill(session, ids, **({"chunk": chunk} if chunk else {}))
    return decode(session, tokenizer, logits,
                  settings=SamplingSettings(max_new_tokens=max_new_tokens, temperature=0.0)).text


# ---------------------------------------------------------------------------------------------------------
# Reporting

METHOD_TITLES = {
    "none": "plain model",
    "selfextend": "SelfExtend",
    "yarn": "YaRN (transformers rope_type yarn)",
    "dynamic": "dynamic NTK (transformers rope_type dynamic)",
}


def _depth_label(depth: float) -> str:
    return f"{depth:g}"


def format_tables(records: list[dict], *, L: int, lengths, depths, methods, task: str, model: str) -> str:
    """One accuracy table per method: rows are lengths, columns depths, cells correct/cases."""
    blocks = [f"{task} retrieval on {model}, L={L:,}; cells are correct/cases"]
    for method in methods:
        rows = [r for r in records if r["method"] == method]
        header = ["length"]
        if method == "selfextend":
            header += ["W", "G"]
        elif method in ("yarn", "dynamic"):
            header += ["factor"]
        header += [f"d={_depth_label(d)}" for d in depths] + ["all"]
        table = [header]
        plain = []
        for length in lengths:
            at = [r for r in rows if r["length"] == length]
            extended = any(r.get("extended") for r in at)
            row = [f"{length:,}"]
            if method == "selfextend":
                first = next((r for r in at if r.get("W") is not None), None)
                row += [str(first["W"]), str(first["G"])] if first else ["-", "-"]
            elif method in ("yarn", "dynamic"):
                first = next((r for r in at if r.get("factor") is not None), None)
                row += [f"{first['factor']:g}"] if first else ["-"]
            for depth in depths:
                cell = [r for r in at if r["depth"] == depth]
                row.append(f"{sum(bool(r['correct']) for r in cell)}/{len(cell)}" if cell else "-")
            if at:
                hits = sum(bool(r["correct"]) for r in at)
                row.append(f"{100 * hits / len(at):.0f}%")
            else:
                row.append("-")
            if method != "none" and at and not extended:
                plain.append(length)
            table.append(row)
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)).rstrip() for r in table]
        title = f"{method}: {METHOD_TITLES[method]}"
        note = []
        if plain:
            note.append(f"  (length {', '.join(f'{n:,}' for n in plain)} fits in L: run as the plain model)")
        blocks.append("\n".join([title, *lines, *note]))
    return "\n\n".join(blocks)


def evaluation_to_dict(evaluation: Evaluation, *, model: str) -> dict:
    s = evaluation.settings
    return {"model": model, "L": evaluation.L, "task": s.task, "lengths": list(s.lengths), "depths": list(s.depths),
            "trials": s.trials, "seed": s.seed, "methods": list(s.methods), "resumed": evaluation.resumed,
            "cases": evaluation.records}
