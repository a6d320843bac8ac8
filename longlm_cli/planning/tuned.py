"""The settings `longlm tune` found best for a model at a length, kept in the cache directory (``tuned.json``).

Owns the store: saving an entry (under a file lock, written whole), finding the entry that applies to a model
and an input length (the tuned length nearest N, within a factor TUNED_REACH either way), and the plan that
entry gives. A damaged file is one warning and is treated as empty. Torch-free; evaluation/tune.py fills it,
pipeline.prepare and `longlm plan` read it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..defaults import EXTENSION_METHODS
from ..errors import CacheError, ModelError, PlanError
from ..models.catalogue import resolve_model
from ..paths import NO_STATE_FILE, cache_dir, ensure_cache_dir, file_lock, read_own_file
from ..report import warn
from .extension import ExtensionSettings
from .plan import Plan, PlanReport, make_plan, plan_for

TUNED_FILE = "tuned.json"
TUNED_REACH = math.sqrt(2)  # a length tuned at T applies to inputs of T / 1.41 .. T * 1.41 tokens
MAX_FILE_BYTES = 4 * 1024**2  # larger than longlm writes it: not read
MAX_TOKENS = 1 << 30  # the most tokens a stored length, window or group size may say


@dataclass(frozen=True)
class Tuned:
    """The winner of one sweep: ``method`` "selfextend" (with window, group_size and scale_base) or "dca"."""

    model: str  # the model key (model_key)
    length: int  # the input length the sweep ran at
    method: str
    window: int | None = None
    group_size: int | None = None
    scale_base: float | None = None
    label: str = ""  # the winning method as `longlm eval` names it, e.g. selfextend:2048x3
    scores: dict = field(default_factory=dict)  # mean score x 100 of every candidate
    samples: int = 0

    def describe(self) -> str:
        return f"{self.label or self.method} (tuned at {self.length:,} tokens: {self.scores.get(self.label, 0):.1f})"


def model_key(name: str) -> str:
    """One key per model whatever name reached it: where it is loaded from."""
    kind, location = resolve_model(name)
    return f"{kind}:{location}"


def tuned_path() -> Path:
    return cache_dir() / TUNED_FILE


def _read(path: Path) -> dict:
    """The stored entries: {} (and one warning) for a file that is not a regular file of at most MAX_FILE_BYTES
    (a link to /dev/zero would never end), not JSON, nested too deep, or not an object."""
    try:
        raw = read_own_file(path, MAX_FILE_BYTES)
    except OSError as exc:
        if exc.errno in NO_STATE_FILE:  # no tuned file there (an unusable cache directory is reported elsewhere)
            return {}
        _warn(path, exc.strerror or str(exc))
        return {}
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError too
        _warn(path, "it is not JSON" if isinstance(exc, RecursionError) else str(exc))
        return {}
    if not isinstance(data, dict):
        _warn(path, "it is not a JSON object")
        return {}
    return data


def _warn(path: Path, why: str) -> None:
    warn(f"ignoring the tuned settings in {path}: {why}")


def save_tuned(entry: Tuned) -> Path:
    """Add ``entry`` (replacing one for the same model and length); returns the file."""
    path = tuned_path()
    ensure_cache_dir(path.parent)
    with file_lock(path.with_suffix(".lock")):
        data = _read(path)
        data.setdefault(entry.model, {})[str(entry.length)] = asdict(entry)
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tuned-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=2)
            os.replace(tmp, path)
        except OSError as exc:
            raise CacheError(f"cannot save the tuned settings in {path}: {exc.strerror or exc}") from None
    return path


def _whole(value) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_TOKENS)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _valid(entry: Tuned) -> bool:
    """Whether a stored entry is one longlm could have written (a hand-edited or damaged one is skipped): every
    field of its type, whole numbers of tokens in range, a finite scale base above 1, finite scores."""
    base_ok = entry.scale_base is None or (_number(entry.scale_base) and 1 < entry.scale_base <= MAX_TOKENS)
    scores_ok = isinstance(entry.scores, dict) and all(
        isinstance(k, str) and _number(v) for k, v in entry.scores.items()
    )
    return (
        entry.method in EXTENSION_METHODS
        and _whole(entry.window)
        and _whole(entry.group_size)
        and entry.length is not None
        and _whole(entry.length)
        and isinstance(entry.model, str)
        and isinstance(entry.label, str)
        and isinstance(entry.samples, int)
        and base_ok
        and scores_ok
    )


def find_tuned(model: str, length: int) -> Tuned | None:
    """The entry for ``model`` (a model_key) whose tuned length is nearest ``length``, within TUNED_REACH."""
    entries = _read(tuned_path()).get(model)
    if not isinstance(entries, dict) or length <= 0:
        return None
    best, skipped = None, 0
    for raw in entries.values():
        entry = _entry(raw)
        if entry is None:
            skipped += 1  # of another shape, or values longlm never writes: not ours to use
            continue
        distance = abs(math.log(length / entry.length)) if entry.length > 0 else math.inf
        if distance <= math.log(TUNED_REACH) and (best is None or distance < best[0]):
            best = (distance, entry)
    if skipped:
        _warn(tuned_path(), f"{skipped} entr{'y' if skipped == 1 else 'ies'} for this model longlm did not write")
    return best[1] if best else None


def _entry(raw) -> Tuned | None:
    try:
        entry = Tuned(**raw)
    except TypeError:
        return None
    return entry if _valid(entry) else None


def tuned_plan(model: str, L: int, length: int) -> tuple[Plan, Tuned] | None:
    """The plan of `longlm tune`'s winner for ``model`` (a name) near ``length`` tokens beyond L, with the
    entry; None when no entry applies, the input fits L, or the tuned G cannot cover this input."""
    if length <= L:
        return None
    try:
        key = model_key(model)
    except ModelError:  # a family name `longlm plan` knows (llama2): no model to have tuned
        return None
    found = find_tuned(key, length)
    if found is None:
        return None
    try:
        return make_plan(context_window=L, length=length, window=found.window, group_size=found.group_size), found
    except PlanError:
        return None


def plan_with_tuned(
    model: str,
    *,
    use_tuned: bool = True,
    length: int | None = None,
    paths: Sequence[str] = (),
    window: int | None = None,
    group_size: int | None = None,
    extend_from: float | None = None,
) -> PlanReport:
    """planning.plan_for, with `longlm tune`'s winner applied as ask/summarize/chat apply it: only when the
    user set no W, G or --extend-from and ``use_tuned``."""
    report = plan_for(model, length=length, paths=paths, window=window, group_size=group_size, extend_from=extend_from)
    given = ExtensionSettings(window=window, group_size=group_size, extend_from=extend_from)
    chosen = given.chosen_by_user()
    found = None if chosen or not use_tuned else tuned_plan(model, report.plan.L, report.plan.N)
    if found is None:
        return report
    plan, entry = found
    runs = "Dual Chunk Attention runs, not the SelfExtend below" if entry.method == "dca" else "the W and G below"
    return replace(report, plan=plan, tuned=f"longlm tune's {entry.describe()}: {runs}; --no-tuned ignores it")
