"""Model files and the cache directory are untrusted: damaged GGUF headers, damaged or unusual model directories
and an unusable cache directory end in one `Error: ...` line; two processes converting or pruning at once are safe.

No test converts a real model: GGUF files are tiny (GGUFWriter or raw bytes) and the dequantization step is
replaced by a copy of the tiny Llama directory.
"""

import argparse
import json
import os
import random
import shutil
import struct
import sys
import threading
import time

import pytest
import torch
from filelock import FileLock

from longlm_cli.doccache import store as doccache
from longlm_cli.errors import CacheError
from longlm_cli.paths import DIRECTORY_LOCK
from longlm_cli.runtime import converted, loader

from helpers import run

gguf = pytest.importorskip("gguf")

QUESTION = "Who keeps the light?"


def _error(result) -> str:
    """The whole stderr of a failed command, which must be exactly one line."""
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr.rstrip("\n")


def _document(tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("The keeper of the light is Ada.")
    return doc


def _ask(tmp_path, model, *extra):
    return run("ask", _document(tmp_path), QUESTION, "--model", model, "--max-new-tokens", 2, *extra)


def _plan(model):
    return run("plan", "--model", model, "--length", 100)


def _tiny_gguf(path, *, tensor: bool = False):
    """A small valid GGUF header (and one small tensor if asked): enough for our checks, not for transformers."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    writer.add_token_list(["a", "bb", "ccc"])
    if tensor:
        writer.add_tensor("token_embd.weight", torch.ones(64, 16).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _copy_tiny(tiny_dir, target):
    shutil.copytree(tiny_dir, target, dirs_exist_ok=True)
    return target


@pytest.fixture
def conversions(monkeypatch, tiny_dir):
    """Replace the dequantization by a (slow) copy of the tiny model; the list counts the conversions run."""
    done = []

    def fake(gguf_path, work, dtype):
        time.sleep(0.3)  # long enough for a concurrent run to arrive while this one converts
        _copy_tiny(tiny_dir, work)
        done.append(gguf_path)

    monkeypatch.setattr(loader, "_dequantize", fake)
    return done


# --- GGUF headers: random bytes and absurd counts --------------------------------------------------------------


def _raw(*, version=3, tensors=0, kvs=1, body=b""):
    return b"GGUF" + struct.pack("<IQQ", version, tensors, kvs) + body


def _gstr(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


HUGE = 2**62
BAD_HEADERS = {
    "random bytes": (random.Random(0).randbytes(4096), "missing GGUF magic bytes"),
    "kv count 2^63": (
        _raw(kvs=2**63, body=bytes(64)),
        "it declares 9223372036854775808 metadata keys, more than the file can hold",
    ),
    "too many keys": (
        _raw(kvs=70_000, body=bytes(20 * 70_000)),
        "it declares 70000 metadata keys, more than the file can hold",
    ),
    "key length 2^62": (
        _raw(body=struct.pack("<Q", HUGE) + b"general.architecture"),
        f"a metadata key ({HUGE} bytes) runs past the end of the file (truncated or damaged)",
    ),
    "string value length 2^62": (
        _raw(body=_gstr("general.architecture") + struct.pack("<IQ", 8, HUGE) + b"llama"),
        f"the value of 'general.architecture' ({HUGE} bytes) runs past the end of the file (truncated or damaged)",
    ),
    "float array beyond the file": (
        _raw(body=_gstr("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, 1000) + bytes(40)),
        "the array 'tokenizer.ggml.scores' (1000 items) runs past the end of the file (truncated or damaged)",
    ),
    "string array beyond the file": (
        _raw(body=_gstr("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, HUGE) + bytes(40)),
        f"the array 'tokenizer.ggml.tokens' ({HUGE} items) runs past the end of the file (truncated or damaged)",
    ),
    "string in an array beyond the file": (
        _raw(body=_gstr("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2) + _gstr("a") + struct.pack("<Q", HUGE)),
        f"a string ({HUGE} bytes) in the array 'tokenizer.ggml.tokens' runs past the end of the file",
    ),
    "arrays nested without end": (
        _raw(body=_gstr("x") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 5000),
        "the array 'x' nests arrays more than 4 deep",
    ),
    "big-endian version": (
        _raw(version=3 << 24),
        "unsupported GGUF version 50331648 (longlm reads versions 1 to 3, little-endian)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_bad_gguf_header_in_plan_is_one_line(tmp_path, case):
    data, reason = BAD_HEADERS[case]
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    assert _error(_plan(path)) == f"Error: {path} is not a valid GGUF file: {reason}"


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_bad_gguf_header_in_ask_is_one_line(tmp_path, case, conversions):
    data, reason = BAD_HEADERS[case]
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    assert _error(_ask(tmp_path, path)) == f"Error: {path} is not a valid GGUF file: {reason}"
    assert conversions == []


def test_truncated_gguf_download_is_refused_before_conversion(tmp_path, conversions):
    path = _tiny_gguf(tmp_path / "cut.gguf", tensor=True)
    with path.open("r+b") as stream:
        stream.truncate(path.stat().st_size - 1024)
    assert _plan(path).exit_code == 0  # the header is intact: plan needs nothing else
    assert _error(_ask(tmp_path, path)) == (
        f"Error: {path} is not a valid GGUF file: the data of tensor 'token_embd.weight' lies past the end of "
        "the file (truncated?)"
    )
    assert conversions == []


def test_absurd_tensor_count_is_refused_before_conversion(tmp_path, conversions):
    path = tmp_path / "many.gguf"
    path.write_bytes(_raw(tensors=2**63, kvs=0, body=bytes(64)))
    assert _error(_ask(tmp_path, path)) == (
        f"Error: {path} is not a valid GGUF file: it declares {2**63} tensors, more than the file can describe"
    )
    assert conversions == []


def test_conversion_failure_in_transformers_is_one_line_naming_the_file(tmp_path):
    """A GGUF whose header is fine but which transformers cannot convert (no tensors at all)."""
    path = _tiny_gguf(tmp_path / "empty.gguf")
    result = _ask(tmp_path, path)
    assert result.exit_code == 1 and "Traceback" not in result.stderr, result.output
    converting, error = result.stderr.splitlines()
    assert converting.startswith("Converting empty.gguf once into ")
    assert error.startswith(f"Error: could not convert the GGUF file {path}: ")
    target = converted.converted_dir_for(path)
    assert not target.exists() and not list(target.parent.glob(f".{target.name}.*"))  # no half-written leftovers


# --- A converted directory damaged after it was written --------------------------------------------------------


def _converted(tiny_dir, gguf_path):
    """A converted directory in the place convert_gguf uses, complete with its marker."""
    target = _copy_tiny(tiny_dir, converted.converted_dir_for(gguf_path))
    converted.write_marker(target)
    return target


def test_truncated_converted_weights_are_converted_again(tmp_path, tiny_dir, conversions):
    path = _tiny_gguf(tmp_path / "tiny.gguf")
    target = _converted(tiny_dir, path)
    weights = target / "model.safetensors"
    size = weights.stat().st_size
    with weights.open("r+b") as stream:
        stream.truncate(size // 2)
    result = _ask(tmp_path, path)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[:2] == [
        f"Warning: the converted model in {target} is damaged (model.safetensors is {size // 2} bytes, {size} were "
        "written); converting tiny.gguf again",
        f"Converting tiny.gguf once into {target} (about 0.0 MB in bfloat16; about a minute; later runs load in "
        "seconds)...",
    ]
    assert conversions == [path] and weights.stat().st_size == size
    assert _ask(tmp_path, path).exit_code == 0 and conversions == [path]  # intact now: used as it is


@pytest.mark.parametrize("marker", ["ok\n", '{"files": {"model.safetensors": {"size": 1, "head_sha256": "0"}}}'])
def test_a_copy_converted_before_digests_is_converted_again(tmp_path, tiny_dir, conversions, marker):
    path = _tiny_gguf(tmp_path / "tiny.gguf")
    target = _converted(tiny_dir, path)
    (target / converted.COMPLETE).write_text(marker)
    result = _ask(tmp_path, path)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == (
        f"Note: converting tiny.gguf again into {target}: it was made by an earlier longlm, which kept no digest of "
        "its files"
    )
    assert conversions == [path] and converted.damage(target) is None


def test_intact_converted_directory_is_used_without_converting(tmp_path, tiny_dir, conversions):
    path = _tiny_gguf(tmp_path / "tiny.gguf")
    _converted(tiny_dir, path)
    result = _ask(tmp_path, path)
    assert result.exit_code == 0, result.output
    assert "Warning" not in result.stderr and conversions == []


def test_a_file_in_place_of_the_converted_directory_is_replaced(tmp_path, tiny_dir, conversions):
    path = _tiny_gguf(tmp_path / "tiny.gguf")
    target = converted.converted_dir_for(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("not a model")
    result = _ask(tmp_path, path)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == (
        f"Warning: {target} is not a converted model directory; converting tiny.gguf again"
    )
    assert conversions == [path] and target.is_dir() and converted.damage(target) is None
    assert _ask(tmp_path, path).exit_code == 0 and conversions == [path]


def test_changed_tokenizer_is_noticed(tmp_path, tiny_dir, conversions):
    path = _tiny_gguf(tmp_path / "tiny.gguf")
    target = _converted(tiny_dir, path)
    tokenizer = target / "tokenizer.json"
    data = tokenizer.read_bytes()
    tokenizer.write_bytes(b"\t" + data[1:] if data[:1] != b"\t" else b" " + data[1:])  # same size, other bytes
    assert converted.damage(target) == "tokenizer.json has changed since it was written"
    assert loader.convert_gguf(path) == target and conversions == [path]
    assert converted.damage(target) is None


# --- Two runs at once ------------------------------------------------------------------------------------------


def test_two_concurrent_conversions_convert_once(tmp_path, conversions):
    path = _tiny_gguf(tmp_path / "tiny.gguf")
    start = threading.Barrier(2)
    results, errors = [], []

    def convert():
        start.wait()
        try:
            results.append(loader.convert_gguf(path))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=convert) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    target = converted.converted_dir_for(path)
    assert errors == [] and results == [target, target]
    assert conversions == [path]
    assert converted.damage(target) is None


def test_a_lock_that_cannot_be_created_is_one_line(tmp_path, conversions):
    path = _tiny_gguf(tmp_path / "tiny.gguf")
    lock = converted.converted_dir_for(path).with_name(converted.converted_dir_for(path).name + ".lock")
    lock.mkdir(parents=True)  # a directory where the lock file should be: fails even for root
    assert _error(_ask(tmp_path, path)) == (
        f"Error: cannot create the lock file {lock}: Is a directory; set LONGLM_CACHE_DIR to a writable directory"
    )
    assert conversions == []


# --- Damaged or unusual model directories ----------------------------------------------------------------------


@pytest.fixture
def model_copy(tiny_dir, tmp_path):
    return _copy_tiny(tiny_dir, tmp_path / "model")


def _pickle_weights(directory, **extra):
    from safetensors.torch import load_file

    weights = directory / "model.safetensors"
    torch.save({**load_file(weights), **extra}, directory / "pytorch_model.bin")
    weights.unlink()


def test_pickle_weights_that_torch_refuses_are_one_line(model_copy, tmp_path):
    _pickle_weights(model_copy, extra=argparse.Namespace(code="anything"))  # not a plain tensor: refused
    assert _error(_ask(tmp_path, model_copy)) == (
        f"Error: model directory {str(model_copy)!r} has only pickle weights (pytorch_model.bin), which torch's "
        "safe (weights-only) loading refused and longlm does not load otherwise; convert them to safetensors"
    )


def test_plain_tensor_pickle_weights_still_load(model_copy, tmp_path):
    _pickle_weights(model_copy)  # weights-only loading reads plain tensors safely
    result = _ask(tmp_path, model_copy)
    assert result.exit_code == 0, result.output


def test_directory_without_weights(model_copy, tmp_path):
    (model_copy / "model.safetensors").unlink()
    assert _error(_ask(tmp_path, model_copy)) == (
        f"Error: model directory {str(model_copy)!r} has a config.json but no weights (no .safetensors file)"
    )


@pytest.mark.parametrize(
    "text, problem",
    [
        ('{"model_type": "llama",', "Expecting property name enclosed in double quotes: line 1 column 24 (char 23)"),
        ("[1, 2]", "it is not a JSON object"),
        ("", "Expecting value: line 1 column 1 (char 0)"),
    ],
)
def test_malformed_config_json(model_copy, tmp_path, text, problem):
    (model_copy / "config.json").write_text(text)
    assert _error(_ask(tmp_path, model_copy)) == (
        f"Error: model directory {str(model_copy)!r} has a malformed config.json: {problem}"
    )


@pytest.mark.parametrize(
    "code, problem",
    [
        ("raise RuntimeError('this model code is broken')\n", "RuntimeError: this model code is broken"),
        ("def broken(:\n", "SyntaxError: invalid syntax (<unknown>, line 1)"),  # transformers parses it unnamed
    ],
    ids=["raises", "syntax error"],
)
def test_broken_remote_code_is_one_line(model_copy, tmp_path, monkeypatch, request, code, problem):
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "hf-modules"))  # not the user's cache
    monkeypatch.setattr(sys, "path", list(sys.path))
    imported = set(sys.modules)
    request.addfinalizer(lambda: [sys.modules.pop(name) for name in set(sys.modules) - imported])
    config = json.loads((model_copy / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_broken.BrokenConfig",
        "AutoModelForCausalLM": "configuration_broken.BrokenModel",
    }
    (model_copy / "config.json").write_text(json.dumps(config))
    (model_copy / "configuration_broken.py").write_text(code)
    assert _error(_ask(tmp_path, model_copy, "--trust-remote-code")) == (
        f"Error: the remote code of model {str(model_copy)!r} (run by --trust-remote-code) failed: {problem}"
    )


# --- An unusable cache directory -------------------------------------------------------------------------------


def test_cache_dir_that_is_a_file(tmp_path, monkeypatch, conversions):
    path = _tiny_gguf(tmp_path / "tiny.gguf")
    cache = tmp_path / "cache-file"
    cache.write_text("not a directory")
    monkeypatch.setenv("LONGLM_CACHE_DIR", str(cache))
    assert _error(_ask(tmp_path, path)) == (
        f"Error: cannot use the cache directory {cache} ($LONGLM_CACHE_DIR): {cache} is a file, not a directory; "
        "set LONGLM_CACHE_DIR to a writable directory"
    )
    assert conversions == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes whatever the permission bits say")
def test_cache_dir_without_write_permission(tmp_path, monkeypatch, conversions):
    path = _tiny_gguf(tmp_path / "tiny.gguf")
    cache = tmp_path / "read-only"
    cache.mkdir(mode=0o500)
    monkeypatch.setenv("LONGLM_CACHE_DIR", str(cache))
    try:
        line = _error(_ask(tmp_path, path))
    finally:
        cache.chmod(0o700)
    assert line == (
        f"Error: cannot use the cache directory {cache} ($LONGLM_CACHE_DIR): cannot create {cache / 'models'}: "
        "Permission denied; set LONGLM_CACHE_DIR to a writable directory"
    )
    assert conversions == []


# --- The document cache: pruning and clearing take turns -------------------------------------------------------


def _kv_with_entries(directory, count=2):
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (directory / f"{i:064x}{doccache.SUFFIX}").write_bytes(b"x" * 100)
    return directory


@pytest.mark.parametrize("operation", ["clear", "prune"])
def test_clear_and_prune_wait_for_the_directory_lock(tmp_path, operation):
    kv = _kv_with_entries(tmp_path / "kv")
    work = (lambda: doccache.clear(kv)) if operation == "clear" else (lambda: doccache.prune(kv, max_bytes=0))
    done = []
    with FileLock(str(kv / DIRECTORY_LOCK)):  # another process pruning
        thread = threading.Thread(target=lambda: done.append(work()))
        thread.start()
        thread.join(timeout=0.5)
        assert thread.is_alive() and len(list(kv.glob(f"*{doccache.SUFFIX}"))) == 2
    thread.join(timeout=30)
    assert len(done[0]) == 2 and not list(kv.glob(f"*{doccache.SUFFIX}"))


def test_cache_clear_with_a_lock_that_cannot_be_created(tmp_path):
    kv = _kv_with_entries(doccache.kv_dir())
    (kv / DIRECTORY_LOCK).mkdir()
    assert _error(run("cache", "clear")) == (
        f"Error: cannot create the lock file {kv / DIRECTORY_LOCK}: Is a directory; "
        "set LONGLM_CACHE_DIR to a writable directory"
    )
    assert len(list(kv.glob(f"*{doccache.SUFFIX}"))) == 2
    with pytest.raises(CacheError):
        doccache.prune(kv, max_bytes=0)


def _tiny_copy(tiny_dir, tmp_path):
    import shutil

    target = tmp_path / "model"
    shutil.copytree(tiny_dir, target)
    return target


def test_checkpoint_missing_tensors_is_refused(tiny_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    model = _tiny_copy(tiny_dir, tmp_path)
    tensors = load_file(model / "model.safetensors")
    del tensors["model.layers.0.mlp.up_proj.weight"]
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    result = run("summarize", model / "config.json", "--model", model)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: model '{model}' lacks 1 weight tensor(s) its config needs (model.layers.0.mlp.up_proj.weight): "
        "the checkpoint is incomplete or for another architecture\n"
    )


def test_tokenizer_larger_than_the_embedding_is_refused(tiny_dir, tmp_path):
    import json

    model = _tiny_copy(tiny_dir, tmp_path)
    config = json.loads((model / "config.json").read_text())
    from safetensors.torch import load_file, save_file

    tensors = load_file(model / "model.safetensors")
    rows = config["vocab_size"] - 20
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        tensors[name] = tensors[name][:rows].clone()
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    (model / "config.json").write_text(json.dumps({**config, "vocab_size": rows}))
    result = run("summarize", model / "config.json", "--model", model)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: model '{model}': its tokenizer has {config['vocab_size']:,} tokens but the model only {rows:,} "
        "embeddings; the tokenizer belongs to another model\n"
    )


def test_rope_base_that_is_not_above_one_is_refused(tiny_dir, tmp_path):
    import json

    model = _tiny_copy(tiny_dir, tmp_path)
    config = json.loads((model / "config.json").read_text())
    config["rope_parameters"] = {**config.get("rope_parameters", {}), "rope_theta": -10000.0, "rope_type": "default"}
    config.pop("rope_theta", None)
    (model / "config.json").write_text(json.dumps(config))
    result = run("summarize", model / "config.json", "--model", model)
    assert result.exit_code == 1
    assert (
        result.stderr
        == f"Error: model '{model}' has RoPE base (rope_theta) -10000.0; it must be a finite number above 1\n"
    )


def test_conversion_that_cannot_fit_on_disk_is_refused_before_it_starts(tmp_path, conversions, monkeypatch):
    import shutil as shutil_module

    assert converted.megabytes(517_000_000) == "517 MB" and converted.megabytes(1_500_000) == "1.5 MB"
    path = _tiny_gguf(tmp_path / "tiny.gguf")
    monkeypatch.setattr(loader, "conversion_plan", lambda gguf: ("float16", 5 * 10**12))
    result = _ask(tmp_path, path)
    assert result.exit_code == 1 and conversions == []
    directory = converted.converted_dir_for(path).parent
    free = shutil_module.disk_usage(directory).free
    assert result.stderr == (
        f"Error: converting tiny.gguf needs about 5,000,000 MB in {directory}, which has "
        f"{converted.megabytes(free)} free; free some space or set LONGLM_CACHE_DIR to a larger disk\n"
    )
    monkeypatch.setattr(loader, "conversion_plan", lambda gguf: ("bfloat16", 10**6))
    monkeypatch.setattr(loader, "available_memory", lambda: 10**5)
    result = _ask(tmp_path, path)
    assert result.stderr == (
        "Error: converting tiny.gguf needs about 1.0 MB of memory for its bfloat16 weights; 0.1 MB is available\n"
    )


# --- What a conversion writes: 16-bit copies, the size said beforehand ----------------------------------------


def _gguf_with(path, tensors):
    """A GGUF file holding ``tensors`` ({name: numpy array, or (quantized bytes, GGMLQuantizationType)})."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    for name, value in tensors.items():
        if isinstance(value, tuple):
            raw, qtype = value
            writer.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=qtype)
        else:
            writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_the_conversion_is_16_bit_in_the_files_own_type(tmp_path):
    import numpy as np

    norm = np.ones(32, dtype=np.float32)
    half = np.ones((32, 32), dtype=np.float16)
    q8 = gguf.quants.quantize(np.ones((32, 32), dtype=np.float32), gguf.GGMLQuantizationType.Q8_0)
    bf16 = gguf.quants.quantize(np.ones((32, 32), dtype=np.float32), gguf.GGMLQuantizationType.BF16)
    cases = {
        "f32.gguf": ({"n": norm, "w": np.ones((32, 32), dtype=np.float32)}, "bfloat16"),
        "f16.gguf": ({"n": norm, "w": half}, "float16"),
        "q8.gguf": ({"n": norm, "w": (q8, gguf.GGMLQuantizationType.Q8_0)}, "float16"),
        "bf16.gguf": ({"n": norm, "w": (bf16, gguf.GGMLQuantizationType.BF16)}, "bfloat16"),
    }
    for name, (tensors, dtype) in cases.items():
        assert loader.conversion_plan(_gguf_with(tmp_path / name, tensors)) == (dtype, 2 * (32 + 32 * 32)), name


def test_a_message_announcing_more_lines_is_not_cut_off(tiny_dir, tmp_path):
    """Without tokenizer.json transformers' message starts "... from one of:" and lists the ways on later lines;
    the one line keeps them (it once ended at the colon)."""
    model = _tiny_copy(tiny_dir, tmp_path)
    (model / "tokenizer.json").unlink()
    line = _error(_ask(tmp_path, model))
    assert line.startswith(f"Error: could not load model '{model}': Couldn't instantiate the backend tokenizer")
    assert not line.endswith(":") and "(1) a `tokenizers` library serialization file, (2)" in line
