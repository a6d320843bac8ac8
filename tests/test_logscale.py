"""SelfExtend's optional query log-scaling (the reference code's ``scale_base``): the engine against the
straightforward reference on every path, None unchanged, and the settings that expose it (pipeline, CLI, eval)."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from transformers import DynamicCache

from longlm_cli import LongLMError
from longlm_cli.engine.selfextend import (
    GroupedKeyCache,
    apply_selfextend,
    log_scale_factors,
    remove_selfextend,
    selfextend_settings,
)
from longlm_cli.evaluation import grid
from longlm_cli.evaluation.methods import Setup, is_log_scaled, method_setup, parse_method, running

from helpers import CORPUS, VOCAB, reference_answer, reference_logits, run, tiny_model

W, G, N = 16, 4, 200
BASE = 64.0  # the tiny models' max_position_embeddings: the reference's choice of base (the pretraining length)
TOL = 1e-4
# Uneven prefill chunks, a second segment appended to the cache, then one-token decoding.
BOUNDS = [0, 37, 100, 150, *range(151, N + 1)]


def _ids(n, seed=1):
    return torch.randint(0, VOCAB, (1, n), generator=torch.Generator().manual_seed(seed))


def _logits(model, ids, **kwargs):
    with torch.no_grad():
        return model(ids, **kwargs).logits


def _pieces(model, ids, bounds, *, grouped=True):
    cache = DynamicCache(config=model.config)
    extra = {"longlm_grouped_keys": GroupedKeyCache()} if grouped else {}
    out = [
        _logits(model, ids[:, lo:hi], past_key_values=cache, use_cache=True, **extra)
        for lo, hi in zip(bounds[:-1], bounds[1:])
    ]
    return torch.cat(out, dim=1)


def _err(a, b) -> float:
    return (a - b).abs().max().item()


# ---------------------------------------------------------------------------------------------------------
# The formula


def test_factor_is_natural_log_of_one_based_position_over_log_base_at_least_one():
    pos = torch.tensor([0, 1, 62, 63, 64, 255, 4095])
    got = log_scale_factors(pos, 64)
    # position p (0-based) is scaled by ln(p + 1) / ln(64): 1 up to p = 63, then 4/3 at p = 255 (256 = 64^(4/3))
    expected = torch.tensor([1.0, 1.0, 1.0, 1.0, math.log(65) / math.log(64), 4 / 3, 2.0])
    assert got.dtype == torch.float32
    assert _err(got, expected) <= 1e-6


# ---------------------------------------------------------------------------------------------------------
# The engine against the reference


@pytest.mark.parametrize("arch", ["llama", "qwen3", "phi", "gemma2", "gemma3"])
def test_every_path_matches_the_reference(arch):
    """Full prefill, chunked prefill, cache append and decode, on the CPU path (phi: partial rotary; qwen3: q
    norm; gemma2: softcap and sliding layers; gemma3: sliding layers)."""
    model = tiny_model(arch)
    ids = _ids(N)
    expected = reference_logits(model, ids, window=W, group_size=G, scale_base=BASE)
    unscaled = reference_logits(model, ids, window=W, group_size=G)
    assert _err(expected, unscaled) > 20 * TOL  # the scaling changes these logits far beyond the tolerance
    apply_selfextend(model, group_size=G, window=W, scale_base=BASE)
    assert _err(_logits(model, ids), expected) <= TOL
    assert _err(_pieces(model, ids, BOUNDS), expected) <= TOL
    assert _err(_pieces(model, ids, BOUNDS, grouped=False), expected) <= TOL


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("arch", ["llama", "gemma2", "phi"])
def test_flex_attention_path_matches_the_reference(monkeypatch, arch):
    """The CUDA path (FlexAttention), run eagerly on the CPU: full forward, chunked prefill and decode."""
    from longlm_cli.engine import selfextend

    monkeypatch.setattr(selfextend, "_use_flex", lambda query: True)
    model = tiny_model(arch)
    ids = _ids(N)
    expected = reference_logits(model, ids, window=W, group_size=G, scale_base=BASE)
    apply_selfextend(model, group_size=G, window=W, scale_base=BASE)
    assert _err(_logits(model, ids), expected) <= TOL
    assert _err(_pieces(model, ids, [0, 90, 198, 199, 200]), expected) <= TOL


def test_strong_scaling_with_a_small_base_matches_the_reference():
    """Base 5: every query past position 4 is scaled, up to ln(200) / ln(5) ~ 3.3, in the band as in the groups."""
    model = tiny_model("mistral")
    ids = _ids(N)
    expected = reference_logits(model, ids, window=W, group_size=G, scale_base=5)
    apply_selfextend(model, group_size=G, window=W, scale_base=5)
    assert _err(_logits(model, ids), expected) <= TOL
    assert _err(_pieces(model, ids, [0, 3, 60, 199, 200]), expected) <= TOL


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_none_is_bit_for_bit_the_unscaled_result(arch):
    model = tiny_model(arch)
    ids = _ids(N)
    apply_selfextend(model, group_size=G, window=W)
    before = _logits(model, ids)
    apply_selfextend(model, group_size=G, window=W, scale_base=None)
    assert selfextend_settings(model).scale_base is None
    assert torch.equal(_logits(model, ids), before)
    # a base past every position scales nothing: max(1, ...) keeps all factors at exactly 1
    apply_selfextend(model, group_size=G, window=W, scale_base=N + 1)
    assert torch.equal(_logits(model, ids), before)
    # and the reference without scale_base is the reference as it was
    assert torch.equal(
        reference_logits(model, ids, window=W, group_size=G, scale_base=None),
        reference_logits(model, ids, window=W, group_size=G),
    )


def test_sliding_window_layers_are_not_scaled():
    """Mistral with a 40-token sliding window on every layer: nothing is extended, so nothing is scaled."""
    model = tiny_model("mistral-sliding")
    ids = _ids(N)
    apply_selfextend(model, group_size=G, window=W)
    before = _logits(model, ids)
    apply_selfextend(model, group_size=G, window=W, scale_base=BASE)
    assert torch.equal(_logits(model, ids), before)


@pytest.mark.parametrize("base", [1, 1.0, 0.5, 0, -3, float("nan"), float("inf"), True, "64"])
def test_bad_base_is_refused(base):
    with pytest.raises(LongLMError, match="scale_base must be a finite number > 1"):
        apply_selfextend(tiny_model("llama"), group_size=G, window=W, scale_base=base)


def test_remove_and_reapply_without_scaling():
    model = tiny_model("llama")
    ids = _ids(N)
    apply_selfextend(model, group_size=G, window=W, scale_base=BASE)
    assert selfextend_settings(model).scale_base == BASE
    remove_selfextend(model)
    apply_selfextend(model, group_size=G, window=W)
    assert _err(_logits(model, ids), reference_logits(model, ids, window=W, group_size=G)) <= TOL


# ---------------------------------------------------------------------------------------------------------
# Settings: pipeline, CLI, evaluation methods


def test_configure_passes_the_base_and_the_cache_key_depends_on_it(tiny_dir):
    from longlm_cli.answering.pipeline import ExtensionSettings, configure, prompt_cache_key
    from longlm_cli.answering.templates import chat_token_ids, load_template, user_message
    from longlm_cli.planning.plan import make_plan
    from longlm_cli.runtime.loader import load_model

    loaded = load_model(str(tiny_dir), device="cpu")
    template = load_template("ask")
    ids = chat_token_ids(loaded.tokenizer, user_message(template, CORPUS, "Who?"))
    plan = make_plan(context_window=loaded.context_window, length=len(ids) + 8)
    assert plan.needs_extension
    configure(loaded.model, plan, ExtensionSettings(scale_base=BASE))
    assert selfextend_settings(loaded.model).scale_base == BASE
    configure(loaded.model, plan)
    assert selfextend_settings(loaded.model).scale_base is None
    keys = {
        base: prompt_cache_key(loaded, str(tiny_dir), template, CORPUS, ids, plan, ExtensionSettings(scale_base=base))[
            1
        ]
        for base in (None, BASE, 2 * BASE)
    }
    assert len(set(keys.values())) == 3  # a log-scaled prefix is never served to another setting
    assert keys[None] == prompt_cache_key(loaded, str(tiny_dir), template, CORPUS, ids, plan)[1]


def test_ask_with_log_scale_gives_the_reference_answer(tiny_dir, tmp_path):
    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)
    question = "Who counted the ships?"
    expected, plan, _ = reference_answer(tiny_dir, "ask", CORPUS, question, max_new_tokens=12, scale_base=2)
    unscaled, _, _ = reference_answer(tiny_dir, "ask", CORPUS, question, max_new_tokens=12)
    assert plan.needs_extension and expected != unscaled  # base 2 changes this answer
    result = run("ask", doc, question, "--model", tiny_dir, "--max-new-tokens", 12, "--log-scale", 2, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["answer"] == expected


@pytest.mark.parametrize(
    "value, message",
    [
        ("0.5", "0.5 is not in the range x>1.0."),
        ("1", "1.0 is not in the range x>1.0."),
        ("nan", "'nan' is not a finite number."),
    ],
)
def test_bad_log_scale_is_one_error_line(tmp_path, value, message):
    doc = tmp_path / "d.txt"
    doc.write_text("text")
    result = run("ask", doc, "Who?", "--log-scale", value)
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert errors == [f"Error: Invalid value for '--log-scale': {message}"]
    assert result.stderr.splitlines()[-1] == errors[0]


def test_log_methods_parse_and_set_the_base_to_L():
    assert parse_method("selfextend+log") == ("selfextend", None, None)
    assert parse_method(" SelfExtend:16x4+LOG ") == ("selfextend", 16, 4)
    assert is_log_scaled("selfextend:16x4+log") and not is_log_scaled("selfextend:16x4")
    planned = method_setup("selfextend", 400, L=64, max_new_tokens=8)
    assert method_setup("selfextend+log", 400, L=64, max_new_tokens=8) == Setup(
        extended=True, W=planned.W, G=planned.G, scale_base=64.0
    )
    assert method_setup("selfextend:16x4+log", 150, L=64, max_new_tokens=8) == Setup(
        extended=True, W=16, G=4, scale_base=64.0
    )
    assert method_setup("selfextend+log", 40, L=64, max_new_tokens=8) == Setup(extended=False)
    assert planned.scale_base is None


@pytest.mark.parametrize("spec", ["yarn+log", "none+log", "+log", "selfextend+logs", "selfextend:16+log"])
def test_log_suffix_only_after_selfextend(spec):
    with pytest.raises(LongLMError, match="unknown method"):
        parse_method(spec)


def test_running_a_log_method_switches_the_scaling_on_and_off():
    model = tiny_model("llama")
    setup = method_setup("selfextend:16x4+log", 150, L=64, max_new_tokens=8)
    with running(SimpleNamespace(model=model, context_window=64), "selfextend:16x4+log", setup):
        assert selfextend_settings(model).scale_base == 64.0
    assert selfextend_settings(model) is None


@pytest.mark.parametrize("log_scale, base", [(None, 64.0), (100.0, 100.0)])
def test_grid_records_carry_the_base_and_keep_methods_apart(log_scale, base):
    methods = ("selfextend", "selfextend+log")
    settings = grid.GridSettings(model="m", tasks=("vt",), lengths=(400,), methods=methods, log_scale=log_scale)
    pending = grid.pending_cases(grid.GridRun(settings=settings, L=64, dtype="float32"), {}, "vt", 400, 0)
    records = {method: record for method, _, record in pending}
    assert records["selfextend"]["scale_base"] is None and records["selfextend+log"]["scale_base"] == base
    # different setups, so run_grid answers each (it shares one answer only between methods that run alike)
    setups = [setup for _, setup, _ in pending]
    assert setups[0] != setups[1] and (setups[0].W, setups[0].G) == (setups[1].W, setups[1].G)
    assert "scale_base" in grid.GRID_CASE_FIELDS


def test_eval_runs_log_methods_with_the_base_given(tiny_dir, tmp_path):
    results = tmp_path / "r.jsonl"
    args = ("eval", "--model", tiny_dir, "--tasks", "vt", "--lengths", "1000", "--samples", "1", "--results", results)
    result = run(*args, "--methods", "selfextend,selfextend+log", "--log-scale", 100)
    assert result.exit_code == 0, result.output
    records = {r["method"]: r for r in map(json.loads, results.read_text().splitlines())}
    assert records["selfextend"]["scale_base"] is None and records["selfextend+log"]["scale_base"] == 100.0
    assert records["selfextend+log"]["extended"]
