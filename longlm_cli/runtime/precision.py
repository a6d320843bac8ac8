"""Which floating-point type ``--dtype auto`` means on each device.

CUDA: bfloat16. CPU: bfloat16 only where the processor has native bf16 instructions (avx512_bf16 or amx_bf16)
*and* bf16 matrix products measured on this machine are faster than float32, both the prefill kind (a block of
tokens) and the decoding kind (one token); else float32. Without native instructions torch emulates bf16 and is
several times slower (9x on an AVX2 EPYC: benchmarks/dtype.py), so nothing is measured there. The measurement
takes under a second, runs once per processor and torch version, and its outcome is kept in the user cache
(``machine.json``) so every later run chooses the same type (document-cache entries are per dtype).

Decoding in bf16 on the CPU runs with oneDNN switched off (``decode_kernels``): for one row, oneDNN's bf16 matrix
product is about half the speed of float32, while torch's own bf16 matrix-vector kernel is faster than float32
(benchmarks/dtype.py). Prefill keeps oneDNN, whose AMX/AVX-512 bf16 kernels are what make bf16 prefill fast.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..paths import NO_STATE_FILE, cache_dir, read_own_file

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 arithmetic
PREFILL_MIN_SPEEDUP = 1.2  # bf16 must beat float32 clearly on prefill...
DECODE_MIN_SPEEDUP = 1.0  # ...and be no slower at decoding
_log = logging.getLogger(__name__)
_RECORD = "machine.json"
# Read as no record, measured and written again without a word: no state file there, or one not readable.
_NO_RECORD = (*NO_STATE_FILE, errno.EACCES)
_MAX_RECORD_BYTES = 64 * 1024  # larger than longlm writes it: not read
DTYPES_CHOSEN = ("float32", "bfloat16")


@dataclass(frozen=True)
class CpuChoice:
    dtype: str  # "float32" or "bfloat16"
    reason: str  # one line for -v
    prefill_speedup: float | None = None  # bf16 over float32, when measured
    decode_speedup: float | None = None


def cpu_flags() -> set[str]:
    """The processor's feature flags (Linux /proc/cpuinfo); empty where they cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_key() -> str:
    import torch

    model = ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{model}|{' '.join(sorted(cpu_flags() & set(NATIVE_BF16_FLAGS)))}|torch {torch.__version__}"


def cpu_dtype() -> CpuChoice:
    """The CPU's ``auto`` dtype: the stored choice for this machine, else decided (and stored) now."""
    native = sorted(cpu_flags() & set(NATIVE_BF16_FLAGS))
    if not native:
        return CpuChoice("float32", "float32: this CPU has no native bf16 instructions")
    key = machine_key()
    stored = read_record(key)
    if stored is not None:
        return stored
    prefill, decode = measure_bf16_speedups()
    faster = prefill >= PREFILL_MIN_SPEEDUP and decode >= DECODE_MIN_SPEEDUP
    choice = CpuChoice(
        "bfloat16" if faster else "float32",
        f"{'bfloat16' if faster else 'float32'}: bf16 measured {prefill:.2f}x float32 on prefill, "
        f"{decode:.2f}x on decoding ({', '.join(native)})",
        round(prefill, 3),
        round(decode, 3),
    )
    write_record(key, choice)
    return choice


@contextmanager
def decode_kernels(dtype, device_type: str, rows: int) -> Iterator[None]:
    """Run a forward of ``rows`` new tokens with the CPU kernels that are fastest for it: oneDNN off for one bf16
    row on the CPU (decoding), restored afterwards; any other forward runs unchanged."""
    import torch

    if rows != 1 or device_type != "cpu" or dtype != torch.bfloat16:
        yield
        return
    # Any: torch types the module's ``enabled`` as its ContextProp descriptor, though it reads and sets a bool.
    mkldnn: Any = torch.backends.mkldnn
    before = mkldnn.enabled
    mkldnn.enabled = False
    try:
        yield
    finally:
        mkldnn.enabled = before


def measure_bf16_speedups(repeats: int = 3) -> tuple[float, float]:
    """(prefill, decode): float32 time / bf16 time of a 256x1024x1024 matrix product and of one 2048-long row
    times a 2048x2048 matrix (the shapes of a prefill chunk and of a decoding step), best of ``repeats``; each
    with the kernels ``decode_kernels`` picks for it, as the model runs them."""
    import torch

    def best(x, w, loops: int) -> float:
        with decode_kernels(x.dtype, "cpu", x.shape[0]):
            torch.nn.functional.linear(x, w)  # warm-up
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in range(loops):
                    torch.nn.functional.linear(x, w)
                times.append(time.perf_counter() - start)
        return min(times)

    gen = torch.Generator().manual_seed(0)
    ratios = []
    for rows, inner, cols, loops in ((256, 1024, 1024, 2), (1, 2048, 2048, 20)):
        x = torch.randn(rows, inner, generator=gen)
        w = torch.randn(cols, inner, generator=gen)
        ratios.append(best(x, w, loops) / best(x.bfloat16(), w.bfloat16(), loops))
    return ratios[0], ratios[1]


def record_path() -> Path:
    return cache_dir() / _RECORD


def read_record(key: str) -> CpuChoice | None:
    """The stored choice for this machine; None when absent or for another machine. One that longlm did not
    write (not JSON, of other types, a link, a fifo, too large) is one warning, and is measured and written
    again."""
    path = record_path()
    try:
        data = json.loads(read_own_file(path, _MAX_RECORD_BYTES).decode("utf-8"))
    except OSError as exc:
        if exc.errno not in _NO_RECORD:
            _ignored(path, exc.strerror or str(exc))
        return None
    except (ValueError, RecursionError):
        _ignored(path, "it is not JSON")
        return None
    if not isinstance(data, dict) or not isinstance(data.get("machine"), str):
        _ignored(path, "it is not a record longlm writes")
        return None
    if data["machine"] != key:
        return None  # another machine's (a cache directory moved or shared): measured for this one
    if data.get("dtype") not in DTYPES_CHOSEN:
        _ignored(path, f"its dtype {str(data.get('dtype'))[:40]!r} is not one longlm chooses")
        return None
    speedups = _number(data.get("prefill_speedup")), _number(data.get("decode_speedup"))
    return CpuChoice(data["dtype"], _one_line(data.get("reason")), *speedups)


def _ignored(path: Path, why: str) -> None:
    _log.warning(f"ignoring the CPU dtype record {path}: {why}; measuring again")


def _one_line(value) -> str:
    return " ".join(value.split())[:200] if isinstance(value, str) else "bf16 measured faster earlier"


def _number(value) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def write_record(key: str, choice: CpuChoice) -> None:
    """Keep the choice for later runs; a cache that cannot be written only means measuring again next time."""
    path = record_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{_RECORD}.{os.getpid()}")
        temp.write_text(json.dumps({"machine": key, **asdict(choice)}, indent=1) + "\n", encoding="utf-8")
        os.replace(temp, path)  # a link at the record's name is replaced, never followed
    except OSError:
        with contextlib.suppress(OSError, UnboundLocalError):
            temp.unlink()  # never a temporary file left behind per run
