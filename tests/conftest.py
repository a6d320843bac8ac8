import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest
from transformers import GPT2Config, GPT2LMHeadModel

from helpers import L, corpus_tokenizer, save_tiny_llama


@pytest.fixture(scope="session")
def _embedded_cache(tmp_path_factory):
    """One cache directory for the embedded-model tests: the model is converted into it once per session."""
    return tmp_path_factory.mktemp("longlm-embedded-cache")


@pytest.fixture(autouse=True)
def _isolated_longlm_cache(request, tmp_path_factory, monkeypatch):
    """Every test gets its own LONGLM_CACHE_DIR (the embedded-model tests share one): the suite never reads or
    writes the user's ~/.cache/longlm."""
    embedded = request.node.get_closest_marker("slow") is not None  # the embedded model, converted once
    cache = request.getfixturevalue("_embedded_cache") if embedded else tmp_path_factory.mktemp("longlm-cache")
    monkeypatch.setenv("LONGLM_CACHE_DIR", str(cache))
    monkeypatch.delenv("LONGLM_CACHE_MAX_BYTES", raising=False)
    # The tiny test documents are far below the default minimum; the default itself is tested in test_doccache.
    monkeypatch.setenv("LONGLM_CACHE_MIN_TOKENS", "0")
    monkeypatch.delenv("LONGLM_MODEL", raising=False)  # the tests assume the built-in default model
    if request.node.get_closest_marker("dtype_choice") is None:
        _pin_cpu_auto_dtype_to_float32()


def _pin_cpu_auto_dtype_to_float32():
    """The exact-output tests are written for float32, which is what `--dtype auto` means on a CPU without a
    bf16 win; on one with it (AMX, measured faster) auto would be bfloat16. Store the float32 choice for this
    machine in the test's cache directory, through the same record longlm keeps, so in-process and installed-
    command runs alike see float32 (the choice itself is tested in test_precision, bf16 runs in test_selfextend)."""
    from longlm_cli.runtime import precision

    precision.write_record(precision.machine_key(), precision.CpuChoice("float32", "float32: pinned by the tests"))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), corpus_tokenizer(), window=L)


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer = corpus_tokenizer()
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tokenizer), n_positions=L))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
