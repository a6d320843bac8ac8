"""What a model transformers loaded must satisfy before longlm uses it, and how a failure to load reads: one
line that names the model and the likely cause (offline hub, pickle-only weights, remote code, a damaged
converted copy)."""

from __future__ import annotations

import math
import os
import pickle
import traceback
from pathlib import Path

from ..errors import ModelError
from ..models.architecture import text_config
from ..models.catalogue import pickle_only_weights
from .converted import describe


def check_loaded(name: str, tokenizer, model, info: dict) -> None:
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


def load_failure(name: str, kind: str, location: str, exc: Exception, trust_remote_code: bool) -> str:
    if kind == "hub" and isinstance(exc, OSError):
        where = (
            "the Hugging Face Hub (HF_HUB_OFFLINE is set)"
            if os.environ.get("HF_HUB_OFFLINE")
            else "the Hugging Face Hub (is the network reachable? HF_HUB_OFFLINE=1 uses only cached models)"
        )
        return f"could not load model {name!r} from {where}: {describe(exc, typed=False)}"
    pickles = pickle_only_weights(Path(location)) if kind == "dir" else []
    if pickles and isinstance(exc, pickle.UnpicklingError):
        return (
            f"model directory {name!r} has only pickle weights ({', '.join(pickles[:3])}), which torch's safe "
            "(weights-only) loading refused and longlm does not load otherwise; convert them to safetensors"
        )
    if trust_remote_code and _raised_in_remote_code(exc):
        return f"the remote code of model {name!r} (run by --trust-remote-code) failed: {describe(exc)}"
    if kind == "gguf":
        return f"could not load model {name!r} converted into {location} (delete it to convert again): {describe(exc)}"
    return f"could not load model {name!r}: {describe(exc)}"


def _raised_in_remote_code(exc: BaseException) -> bool:
    """Whether an exception comes from a model's own Python code: while transformers parses it (in
    dynamic_module_utils) or runs it (imported as the package transformers_modules)."""
    for frame in traceback.extract_tb(exc.__traceback__):
        path = Path(frame.filename)
        if "transformers_modules" in path.parts or path.parts[-2:] == ("transformers", "dynamic_module_utils.py"):
            return True
    return False
