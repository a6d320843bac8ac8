"""Finding and loading models: the embedded SmolLM2 default, a .gguf file, a local directory or a hub id.

Model files are untrusted input: a GGUF is checked (gguf.check_gguf) before transformers reads it, and any failure
to convert or load a model becomes one ModelError naming it. A GGUF is converted once into the user cache, under
a file lock so that two first runs at once convert it once. The completion marker records the size and a digest
of the first bytes of every file written, so a converted directory damaged later (a truncated
model.safetensors) is noticed and converted again instead of failing on every run.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import pickle
import shutil
import struct
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

from ..catalogue import context_window, display_name, gguf_metadata, pickle_only_weights, resolve_model, text_config
from ..defaults import DEFAULT_DEVICE, DEFAULT_DTYPE, DEFAULT_MODEL, DEVICES, DTYPES
from ..errors import LongLMError, ModelError
from ..gguf import tensor_elements
from ..paths import cache_dir, embedded_gguf_path, embedded_model_dir, ensure_cache_dir, file_lock
from .precision import cpu_dtype

_COMPLETE = ".longlm-complete"  # written last: a converted directory without it is never used
_HEAD_BYTES = 1 << 16  # each file's first bytes are digested: cheap, and they hold a safetensors header
_LEGACY_MARKER = "ok"  # the marker of older versions, which recorded nothing
_GGML_F32, _GGML_BF16 = 0, 30  # ggml tensor types of plain floats (GGUF's tensor table)


@dataclass(frozen=True)
class LoadedModel:
    model: object  # transformers PreTrainedModel
    tokenizer: object
    name: str
    context_window: int  # the pretraining window L
    device: str
    dtype: str


def pick_device(device: str = DEFAULT_DEVICE) -> str:
    import torch

    if device not in DEVICES:
        raise ModelError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    return device


def pick_dtype(dtype: str, device: str):
    import torch

    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if dtype == "auto":
        return torch.bfloat16 if device == "cuda" else getattr(torch, cpu_dtype().dtype)
    return getattr(torch, dtype)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _converted_dir_for(gguf: Path) -> Path:
    """Where a converted copy of a GGUF file lives in the user cache."""
    if embedded_gguf_path() is not None and gguf.resolve() == embedded_gguf_path().resolve():
        return embedded_model_dir()
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{gguf.stem}-{key}"


def convert_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF file once into a transformers directory in the user cache; return that directory.

    Concurrent runs take turns on a lock file beside the target; the one that waited finds the work done. A
    converted directory that no longer matches its marker is converted again, with one warning.
    """
    target = _converted_dir_for(gguf)
    if (target / _COMPLETE).exists() and _damage(target) is None:
        return target
    ensure_cache_dir(target.parent)
    lock = target.with_name(f"{target.name}.lock")
    with file_lock(lock, waiting=f"Waiting for another longlm process converting {gguf.name} into {target}..."):
        if (target / _COMPLETE).exists():
            problem = _damage(target)
            if problem is None:
                return target  # converted by the process we waited for
            _say(f"Warning: the converted model in {target} is damaged ({problem}); converting {gguf.name} again")
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            _say(f"Warning: {target} is not a converted model directory; converting {gguf.name} again")
        gguf_metadata(gguf, check_tensors=True)  # a damaged or hostile header: one line, before transformers
        for stale in target.parent.glob(f".{target.name}.*"):  # work directories of killed runs (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        _convert_into(gguf, target)
    return target


def _convert_into(gguf: Path, target: Path) -> None:
    """Convert into a temporary directory beside ``target``, renamed into place only when complete, so an
    interrupted run never leaves a directory that a later run would use. Any failure is one ModelError."""
    dtype, size = conversion_plan(gguf)
    _check_room(gguf, target.parent, size, dtype)
    _say(
        f"Converting {gguf.name} once into {target} (about {_megabytes(size)} in {dtype}; about a minute; later "
        "runs load in seconds)..."
    )
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as exc:
        raise ModelError(f"could not convert the GGUF file {gguf}: {exc.strerror or exc} in {target.parent}") from None
    try:
        _dequantize(gguf, work, dtype)
        _write_marker(work)
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            target.unlink()  # something else took the directory's name (we hold the lock): never a lasting break
        elif target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    except BaseException as exc:
        shutil.rmtree(work, ignore_errors=True)
        if isinstance(exc, Exception) and not isinstance(exc, LongLMError):  # never KeyboardInterrupt
            raise ModelError(f"could not convert the GGUF file {gguf}: {_describe(exc)}") from exc
        raise


def _check_room(gguf: Path, directory: Path, size: int, dtype: str) -> None:
    """Refuse, before a conversion that could not finish, when the disk or the memory cannot hold the copy
    (its weights live in memory while they are written)."""
    free = shutil.disk_usage(directory).free
    if size > free:
        raise ModelError(
            f"converting {gguf.name} needs about {_megabytes(size)} in {directory}, which has "
            f"{_megabytes(free)} free; free some space or set LONGLM_CACHE_DIR to a larger disk"
        )
    memory = available_memory()
    if memory is not None and size > memory:
        raise ModelError(
            f"converting {gguf.name} needs about {_megabytes(size)} of memory for its {dtype} weights; "
            f"{_megabytes(memory)} is available"
        )


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.{0 if size >= 1e8 else 1}f} MB"


def available_memory() -> int | None:
    """Bytes of memory available now (Linux: MemAvailable), or None where it cannot be told."""
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def conversion_plan(gguf: Path) -> tuple[str, int]:
    """(dtype, bytes) of the converted copy of ``gguf``: never float32 (a 4.9 GB Q4 file of an 8B model would
    become 32 GB) but the file's own 16-bit type. That is float16 for a float16 file and for a quantized one,
    whose block scales are float16 (its weights round 7x finer than in bfloat16: measured on the embedded
    model, 0.002 against 0.014 at most); bfloat16 for a bfloat16 or float32 file (float32's range). load_model
    then runs the copy in whatever dtype was asked for (upcasting to float32 is exact)."""
    with gguf.open("rb") as stream:  # checked before this (convert_gguf): a bad header is already one error
        elements = tensor_elements(stream)
    wide = _GGML_BF16 in elements or set(elements) <= {_GGML_F32}
    return ("bfloat16" if wide else "float16"), 2 * sum(elements.values())


def _dequantize(gguf: Path, work: Path, dtype: str) -> None:
    """Load a GGUF with transformers, dequantizing it tensor by tensor into ``dtype``, and save it as safetensors
    with its tokenizer in ``work``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    from transformers.utils import logging

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    shown = sys.stderr is not None and sys.stderr.isatty()  # third-party bars never go into a log or a pipe
    if shown:
        logging.enable_progress_bar()  # transformers' bar over the tensors being dequantized
    # Its GGUF reader draws a plain tqdm bar on stderr: kept off a log or a pipe by holding stderr meanwhile.
    held = contextlib.nullcontext() if shown else contextlib.redirect_stderr(io.StringIO())
    try:
        with held:
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent),
                gguf_file=gguf.name,
                dtype=getattr(torch, dtype),
                quantization_config=GgufConfig(dequantize=True),  # plain weights even where `kernels` could pack
            )
    finally:
        logging.disable_progress_bar()
    if dtype == "float16" and not all(torch.isfinite(p).all() for p in model.parameters()):
        # No real quantized model has one (its block scales are float16); refused in one line, never kept.
        raise ModelError(f"could not convert the GGUF file {gguf}: a weight exceeds float16's range")
    # The GGUF quantizer marks the model unserializable; the weights are already dequantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(work)
    tokenizer.save_pretrained(work)


def _file_record(path: Path) -> dict[str, object]:
    with path.open("rb") as stream:
        head = stream.read(_HEAD_BYTES)
    return {"size": path.stat().st_size, "head_sha256": hashlib.sha256(head).hexdigest()}


def _write_marker(directory: Path) -> None:
    """Write the completion marker of a converted directory, recording every file in it."""
    files = {
        path.relative_to(directory).as_posix(): _file_record(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != _COMPLETE
    }
    (directory / _COMPLETE).write_text(json.dumps({"files": files}, indent=1) + "\n", encoding="utf-8")


def _damage(directory: Path) -> str | None:
    """Why a converted directory that has a completion marker cannot be used; None when it is intact."""
    try:
        text = (directory / _COMPLETE).read_text(encoding="utf-8").strip()
        files = {} if text == _LEGACY_MARKER else json.loads(text)["files"]
        for name, record in files.items():
            path = directory / name
            if not path.is_file():
                return f"{name} is missing"
            found = _file_record(path)
            if found["size"] != record["size"]:
                return f"{name} is {found['size']} bytes, {record['size']} were written"
            if found != record:
                return f"{name} has changed since it was written"
        weights = sorted(directory.glob("*.safetensors"))
        if not weights:
            return "it holds no .safetensors weights"
        return next(filter(None, map(_safetensors_damage, weights)), None)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"it cannot be checked: {_describe(exc)}"


def _safetensors_damage(path: Path) -> str | None:
    """Whether a safetensors file is as long as its own header says (a truncated copy is shorter)."""
    size = path.stat().st_size
    with path.open("rb") as stream:
        raw = stream.read(8)
        header_size = struct.unpack("<Q", raw)[0] if len(raw) == 8 else size
        if header_size > size - 8:
            return f"{path.name} is truncated ({size} bytes)"
        header = json.loads(stream.read(header_size))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    expected = 8 + header_size + end
    return None if size == expected else f"{path.name} is {size} bytes, its header says {expected}"


def _describe(exc: BaseException, *, typed: bool = True) -> str:
    """The first line of an exception, named by its type unless that is a plain OSError or ValueError."""
    line = next((part.strip() for part in str(exc).splitlines() if part.strip()), "")
    if (not typed or type(exc) in (OSError, ValueError)) and line:
        return line
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _quiet_transformers() -> None:
    """transformers' own progress bars and warnings would garble longlm's stderr."""
    import logging as std_logging

    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    std_logging.getLogger("huggingface_hub").setLevel(std_logging.ERROR)  # its retry warnings, one per try


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    device: str = DEFAULT_DEVICE,
    dtype: str = DEFAULT_DTYPE,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a causal LM and its tokenizer, ready for inference."""
    kind, location = resolve_model(name)
    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    _quiet_transformers()
    if kind == "gguf":
        location = str(convert_gguf(Path(location)))
    tokenizer, model = _from_pretrained(name, kind, location, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    from ..engine.plain import use_plain_cpu_attention  # imports transformers: not at module level

    use_plain_cpu_attention(model.to(device).eval())  # SDPA but for decoding steps on the CPU (engine/plain.py)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=display_name(name),
        context_window=context_window(model.config),
        device=device,
        dtype=str(torch_dtype).removeprefix("torch."),
    )


def _from_pretrained(name: str, kind: str, location: str, *, dtype, trust_remote_code: bool) -> tuple:
    """(tokenizer, model) loaded by transformers; any failure (but KeyboardInterrupt) is one ModelError."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
        model, info = AutoModelForCausalLM.from_pretrained(
            location, dtype=dtype, trust_remote_code=trust_remote_code, output_loading_info=True
        )
    except LongLMError:
        raise
    except Exception as exc:
        raise ModelError(_load_failure(name, kind, location, exc, trust_remote_code)) from exc
    _check_loaded(name, tokenizer, model, info)
    return tokenizer, model


def _check_loaded(name: str, tokenizer, model, info: dict) -> None:
    """Refuse what transformers loads without a word but that would answer nonsense or crash later: weights
    missing from the checkpoint (initialised at random), a tokenizer larger than the model's embedding (an
    index error mid-prompt; runtime.generate checks the added tokens a prompt uses), a RoPE base that is not a
    finite number above 1."""
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise ModelError(
            f"model {name!r} lacks {len(missing)} weight tensor(s) its config needs ({shown}): the checkpoint is "
            "incomplete or for another architecture"
        )
    rows = model.get_input_embeddings().num_embeddings
    if tokenizer.vocab_size > rows:  # added special tokens beyond the embedding are caught if a prompt uses them
        raise ModelError(
            f"model {name!r}: its tokenizer has {tokenizer.vocab_size:,} tokens but the model only {rows:,} "
            "embeddings; the tokenizer belongs to another model"
        )
    bad = [b for b in _rope_bases(text_config(model.config)) if not _is_rope_base(b)]
    if bad:
        raise ModelError(f"model {name!r} has RoPE base (rope_theta) {bad[0]!r}; it must be a finite number above 1")


def _rope_bases(config) -> list:
    """Every rope_theta a config holds: top level, in rope_parameters, or per layer type within it."""
    params = getattr(config, "rope_parameters", None)
    found = [config.rope_theta] if getattr(config, "rope_theta", None) is not None else []
    if isinstance(params, dict):
        found += [params["rope_theta"]] if "rope_theta" in params else []
        found += [v["rope_theta"] for v in params.values() if isinstance(v, dict) and "rope_theta" in v]
    return found


def _is_rope_base(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 1


def _load_failure(name: str, kind: str, location: str, exc: Exception, trust_remote_code: bool) -> str:
    if kind == "hub" and isinstance(exc, OSError):
        where = (
            "the Hugging Face Hub (HF_HUB_OFFLINE is set)"
            if os.environ.get("HF_HUB_OFFLINE")
            else "the Hugging Face Hub (is the network reachable? HF_HUB_OFFLINE=1 uses only cached models)"
        )
        return f"could not load model {name!r} from {where}: {_describe(exc, typed=False)}"
    pickles = pickle_only_weights(Path(location)) if kind == "dir" else []
    if pickles and isinstance(exc, pickle.UnpicklingError):
        return (
            f"model directory {name!r} has only pickle weights ({', '.join(pickles[:3])}), which torch's safe "
            "(weights-only) loading refused and longlm does not load otherwise; convert them to safetensors"
        )
    if trust_remote_code and _raised_in_remote_code(exc):
        return f"the remote code of model {name!r} (run by --trust-remote-code) failed: {_describe(exc)}"
    if kind == "gguf":
        return f"could not load model {name!r} converted into {location} (delete it to convert again): {_describe(exc)}"
    return f"could not load model {name!r}: {_describe(exc)}"


def _raised_in_remote_code(exc: BaseException) -> bool:
    """Whether an exception comes from a model's own Python code: while transformers parses it (in
    dynamic_module_utils) or runs it (imported as the package transformers_modules)."""
    for frame in traceback.extract_tb(exc.__traceback__):
        path = Path(frame.filename)
        if "transformers_modules" in path.parts or path.parts[-2:] == ("transformers", "dynamic_module_utils.py"):
            return True
    return False
