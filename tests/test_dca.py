"""Dual Chunk Attention (engine/dca.py) against a straightforward reference: full score matrices, queries and
keys re-rotated at the DCA positions with the model's own RoPE code, one softmax per row."""

import json

import pytest
import torch
from transformers import AttentionInterface, DynamicCache, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.masking_utils import AttentionMaskInterface

from longlm_cli import LongLMError, UnsupportedModelError
from longlm_cli.engine import dca
from longlm_cli.engine.dca import (
    ChunkKeyCache,
    DcaConfig,
    apply_dca,
    chunk_key_delta,
    dca_settings,
    inter_query_delta,
    remove_dca,
    successive_query_delta,
)
from longlm_cli.engine.selfextend import apply_selfextend, remove_selfextend, selfextend_settings

from helpers import ARCHS, BASE, CORPUS, VOCAB, _rerotate, reference_answer, run, tiny_model

L = BASE["max_position_embeddings"]  # the tiny models' pretraining window
DEFAULT = DcaConfig.for_window(L)  # S = 48, w = 8: chunks of 40 tokens
N = 200  # five chunks
TOL = 1e-4

# ---------------------------------------------------------------------------------------------------------
# Reference

_REF = {}


def _dca_positions(qpos, kpos, chunk_size, local_window):
    """The official code's positions, written out: (q intra, q successive, q inter, k), each per token."""
    c = chunk_size - local_window
    q_intra = qpos % c
    q_succ = torch.clamp(qpos % c + c, max=chunk_size)
    q_inter = torch.full_like(qpos, min(2 * c - 1, chunk_size))
    return q_intra, q_succ, q_inter, kpos % c


def _scores(q, k, scaling, softcap):
    scores = q @ k.transpose(-1, -2) * scaling
    return softcap * torch.tanh(scores / softcap) if softcap else scores


def reference_attention(
    module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None, sliding_window=None, **kw
):
    model, S, w = _REF["model"], _REF["chunk_size"], _REF["local_window"]
    Q, K = query.shape[2], key.shape[2]
    rep = query.shape[1] // key.shape[1]
    k, v = key.repeat_interleave(rep, 1), value.repeat_interleave(rep, 1).float()
    kpos = torch.arange(K)
    qpos = kpos[K - Q :]
    i, j = qpos[:, None], kpos[None, :]
    if sliding_window:
        scores = _scores(query.float(), k.float(), scaling, softcap)
        keep = (j <= i) & (i - j < sliding_window)
    else:
        q_intra, q_succ, q_inter, k_new = _dca_positions(qpos, kpos, S, w)
        kc = _rerotate(model, module, k, kpos, k_new)
        intra, succ, inter = (
            _scores(_rerotate(model, module, query, qpos, p), kc, scaling, softcap) for p in (q_intra, q_succ, q_inter)
        )
        c = S - w
        same, previous = i // c == j // c, i // c == j // c + 1
        scores = torch.where(same, intra, torch.where(previous, succ, inter))
        keep = j <= i
    out = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1) @ v
    return out.transpose(1, 2).to(query.dtype), None


AttentionInterface.register("longlm_dca_reference", reference_attention)
AttentionMaskInterface.register("longlm_dca_reference", lambda *a, **k: None)


def reference_logits(model, ids, config: DcaConfig = DEFAULT):
    original = model.config._attn_implementation
    _REF.update(model=model, chunk_size=config.chunk_size, local_window=config.local_window)
    model.set_attn_implementation("longlm_dca_reference")
    try:
        return _logits(model, ids)
    finally:
        model.set_attn_implementation(original)


def _ids(n, seed=1):
    return torch.randint(0, VOCAB, (1, n), generator=torch.Generator().manual_seed(seed))


def _logits(model, ids, **kwargs):
    with torch.no_grad():
        return model(ids, **kwargs).logits


def _apply(model, config: DcaConfig = DEFAULT):
    return apply_dca(
        model, chunk_size=config.chunk_size, local_window=config.local_window, query_chunk=config.query_chunk
    )


def _err(a, b):
    return (a - b).abs().max().item()


# ---------------------------------------------------------------------------------------------------------
# Positions


def test_defaults_follow_official_code():
    """replace_with_chunkllama(pretraining_length=L): chunk_size = L * 3 // 4, local_window = L // 8."""
    config = DcaConfig.for_window(4096)
    assert (config.chunk_size, config.local_window, config.chunk_len) == (3072, 512, 2560)


def test_engine_positions_match_hand_written_table():
    """S = 5, w = 2: chunks of c = 3; keys at j % 3; successive queries at min(i % 3 + 3, 5); inter at 5."""
    config = DcaConfig(chunk_size=5, local_window=2)
    pos = torch.arange(9)
    assert (pos + chunk_key_delta(pos, config)).tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2]
    assert (pos + successive_query_delta(pos, config)).tolist() == [3, 4, 5, 3, 4, 5, 3, 4, 5]
    assert (pos + inter_query_delta(pos, config)).tolist() == [5] * 9
    # the reference's own positions agree
    _, succ, inter, k = _dca_positions(pos, pos, 5, 2)
    assert succ.tolist() == [3, 4, 5] * 3 and inter.tolist() == [5] * 9 and k.tolist() == [0, 1, 2] * 3


def test_successive_distance_is_true_within_local_window():
    """Against the previous chunk, the distance is the true one while i % c <= w, then capped at S - j % c."""
    config = DEFAULT
    c = config.chunk_len
    i = torch.arange(c, 2 * c)  # queries of chunk 1
    j = torch.arange(0, c)  # keys of chunk 0
    dist = (i + successive_query_delta(i, config))[:, None] - (j + chunk_key_delta(j, config))[None, :]
    true = i[:, None] - j[None, :]
    near = (i % c <= config.local_window)[:, None]
    assert torch.equal(dist[near.expand_as(dist)], true[near.expand_as(true)])
    assert int(dist.max()) == config.chunk_size and bool((dist <= true).all())


# ---------------------------------------------------------------------------------------------------------
# Engine against the reference


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_matches_reference(arch):
    model = tiny_model(arch)
    ids = _ids(N)
    expected = reference_logits(model, ids)
    plain = _logits(model, ids)
    _apply(model)
    got = _logits(model, ids)
    assert _err(got, expected) <= TOL
    if arch == "mistral-sliding":
        # Every layer has a 40-token sliding window: nothing to extend, the plain model's attention is kept.
        assert _err(got, plain) <= TOL
    else:
        # DCA is really exercised: the first chunk is the plain model's, later tokens differ.
        assert _err(got[:, : DEFAULT.chunk_len], plain[:, : DEFAULT.chunk_len]) <= TOL
        assert _err(got, plain) > 1e-2


@pytest.mark.parametrize(
    "config",
    [
        DcaConfig(chunk_size=13, local_window=5),  # chunks of 8: many inter-chunk keys
        DcaConfig(chunk_size=13, local_window=9),  # window wider than a chunk: the successive cap never bites
        DcaConfig(chunk_size=30, local_window=0),  # no local window: successive queries all at S
        DcaConfig(chunk_size=48, local_window=8, query_chunk=1),
        DcaConfig(chunk_size=48, local_window=8, query_chunk=7),
    ],
    ids=str,
)
def test_other_settings_match_reference(config):
    model = tiny_model("qwen2")
    ids = _ids(N)
    expected = reference_logits(model, ids, config)
    _apply(model, config)
    assert _err(_logits(model, ids), expected) <= TOL


def test_softcap_path_matches_reference_with_odd_settings():
    model = tiny_model("gemma2")
    ids = _ids(150)
    config = DcaConfig(chunk_size=17, local_window=6)
    expected = reference_logits(model, ids, config)
    _apply(model, config)
    assert _err(_logits(model, ids), expected) <= TOL


@pytest.mark.parametrize("arch", ["llama", "gemma3", "phi"])
def test_input_within_one_chunk_is_unmodified(arch):
    model = tiny_model(arch)
    ids = _ids(DEFAULT.chunk_len)
    plain = _logits(model, ids)
    _apply(model)
    assert _err(_logits(model, ids), plain) <= TOL


def _key_cache(kind: str, cache) -> dict:
    """The forward arguments for a key cache kept apart, re-rotated in ``cache``'s own buffer, or none."""
    if kind == "none":
        return {}
    return {"longlm_dca_keys": ChunkKeyCache(kv=cache if kind == "in_place" else None)}


@pytest.mark.parametrize("arch", ["llama", "gemma3", "phi3", "mistral-sliding"])
@pytest.mark.parametrize("key_cache", ["in_place", "apart", "none"])
def test_chunked_prefill_append_and_decode_equal_full_forward(arch, key_cache):
    model = tiny_model(arch)
    ids = _ids(N)
    expected = reference_logits(model, ids)
    _apply(model)
    cache = DynamicCache(config=model.config)
    extra = _key_cache(key_cache, cache)
    # prefill in uneven chunks that straddle chunk boundaries, a second segment appended, then one-token decode
    bounds = [0, 37, 100, 150] + list(range(151, N + 1))
    pieces = [
        _logits(model, ids[:, lo:hi], past_key_values=cache, use_cache=True, **extra)
        for lo, hi in zip(bounds[:-1], bounds[1:])
    ]
    assert _err(torch.cat(pieces, dim=1), expected) <= TOL
    if key_cache == "in_place" and arch != "mistral-sliding":  # every key before the last chunk, in place
        counts = extra["longlm_dca_keys"].in_place_counts()
        assert counts and set(counts.values()) == {(N - 1) // DEFAULT.chunk_len * DEFAULT.chunk_len}
        assert not any("buffer" in entry for entry in extra["longlm_dca_keys"].layers.values())


@pytest.mark.parametrize("in_place", [True, False])
def test_key_cache_survives_cache_crop(in_place):
    """A follow-up question on a cropped cache (same document prefix) still gives the full forward's logits.

    The cropped keys [100, 120) lie before the last chunk (120..), so stale rotated keys would be read."""
    model = _apply(tiny_model("llama"))
    doc, q1, q2 = _ids(100, 1), _ids(30, 2), _ids(30, 3)
    cache = DynamicCache(config=model.config)
    keys = ChunkKeyCache(kv=cache if in_place else None)
    _logits(model, torch.cat([doc, q1], 1), past_key_values=cache, use_cache=True, longlm_dca_keys=keys)
    cache.crop(-30)
    got = _logits(model, q2, past_key_values=cache, use_cache=True, longlm_dca_keys=keys)
    assert _err(got, _logits(model, torch.cat([doc, q2], 1))[:, 100:]) <= TOL


@pytest.mark.parametrize("key_cache", ["in_place", "apart"])
def test_key_cache_is_not_reused_across_settings(key_cache):
    """Settings changed in the middle of a conversation: keys rotated for the old chunks are not read (in place:
    they are turned back and rotated for the new chunks)."""

    def conversation(kind):
        model = _apply(tiny_model("llama"), DcaConfig(chunk_size=13, local_window=5))
        cache = DynamicCache(config=model.config)
        extra = _key_cache(kind, cache)
        _logits(model, ids[:, :150], past_key_values=cache, use_cache=True, **extra)
        _apply(model)
        return _logits(model, ids[:, 150:], past_key_values=cache, use_cache=True, **extra)

    ids = _ids(N)
    assert _err(conversation(key_cache), conversation("none")) <= TOL


def test_plain_torch_path_matches_reference(monkeypatch):
    """The block kernel other devices use (and softcapping uses) agrees with the reference too."""
    from longlm_cli.engine import blocks

    monkeypatch.setattr(blocks, "attend", blocks.attend_torch)
    monkeypatch.setattr(dca, "attend", blocks.attend_torch)
    model = tiny_model("gemma3")
    ids = _ids(N)
    expected = reference_logits(model, ids)
    _apply(model)
    assert _err(_logits(model, ids), expected) <= TOL


# ---------------------------------------------------------------------------------------------------------
# The switch


def test_remove_restores_and_reapply_reconfigures():
    model = tiny_model("llama")
    ids = _ids(N)
    plain = _logits(model, ids)
    _apply(model)
    first = _logits(model, ids)
    other = DcaConfig(chunk_size=13, local_window=5)
    _apply(model, other)
    assert dca_settings(model) == other
    second = _logits(model, ids)
    assert _err(second, reference_logits(model, ids, other)) <= TOL
    assert _err(first, second) > 1e-2
    remove_dca(model)
    assert model.config._attn_implementation == "sdpa" and dca_settings(model) is None
    assert torch.equal(_logits(model, ids), plain)


def test_switching_between_selfextend_and_dca():
    model = tiny_model("llama")
    ids = _ids(N)
    plain = _logits(model, ids)
    apply_selfextend(model, group_size=4, window=16)
    _apply(model)
    assert selfextend_settings(model) is None and dca_settings(model) == DEFAULT
    assert _err(_logits(model, ids), reference_logits(model, ids)) <= TOL
    apply_selfextend(model, group_size=4, window=16)
    assert dca_settings(model) is None
    remove_selfextend(model)
    assert torch.equal(_logits(model, ids), plain)
    _apply(model)
    remove_dca(model)
    assert torch.equal(_logits(model, ids), plain)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(chunk_size=16, local_window=16),
        dict(chunk_size=8, local_window=16),
        dict(chunk_size=16, local_window=-1),
        dict(chunk_size=16.0, local_window=2),
        dict(chunk_size=True, local_window=0),
        dict(chunk_size=16, local_window=2, query_chunk=0),
    ],
    ids=str,
)
def test_rejects_bad_settings(kwargs):
    model = tiny_model("llama")
    with pytest.raises(LongLMError):
        apply_dca(model, **kwargs)
    assert model.config._attn_implementation == "sdpa"


def test_refuses_model_without_rope():
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=64))
    with pytest.raises(UnsupportedModelError, match=r"GPT2LMHeadModel \(model_type 'gpt2'\) has no rotary"):
        _apply(model)


def test_refuses_dynamic_rope():
    config = LlamaConfig(**{**BASE, "rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}})
    with pytest.raises(UnsupportedModelError, match="rope type 'dynamic'"):
        _apply(LlamaForCausalLM(config))


def test_refuses_padded_batch():
    model = _apply(tiny_model("llama"))
    ids = _ids(20).repeat(2, 1)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with pytest.raises(LongLMError, match="padded"):
        _logits(model, ids, attention_mask=mask)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("arch", ["llama", "gemma2", "phi"])
def test_cuda_matches_cpu_float32(arch):
    """CUDA in bfloat16 against the float32 CPU path: bf16 keeps 8 mantissa bits, so logits of these tiny
    models (magnitude ~10) agree to about 5e-2."""
    model = _apply(tiny_model(arch))
    ids = _ids(N)
    cpu = _logits(model, ids)
    model.to("cuda", torch.bfloat16)
    gpu = _logits(model, ids.cuda()).float().cpu()
    assert _err(gpu, cpu) <= 5e-2 * max(1.0, cpu.abs().max().item())


# ---------------------------------------------------------------------------------------------------------
# ask / summarize / chat with --extension dca


def test_ask_with_dca_streams_the_reference_answer(tiny_dir, tmp_path):
    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)
    question = "Who counted the ships?"
    expected, plan, _ = reference_answer(
        tiny_dir, "ask", CORPUS, question, max_new_tokens=10, logits_fn=reference_logits
    )
    assert plan.needs_extension and plan.N > 2 * DEFAULT.chunk_len  # inter-chunk positions are exercised
    args = ("ask", doc, question, "--model", tiny_dir, "--max-new-tokens", 10, "--extension", "dca")
    streamed = run(*args)
    assert streamed.exit_code == 0, streamed.output
    assert streamed.stdout == expected + "\n"
    data = json.loads(run(*args, "--json").stdout)  # the second run loads the document from the cache
    assert (data["answer"], data["extension"], data["cache"]) == (expected, "dca", "hit")


def test_dca_and_selfextend_never_share_a_cache_entry(tiny_dir, tmp_path):
    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)
    common = ("ask", doc, "Who?", "--model", tiny_dir, "--max-new-tokens", 2, "--json")
    runs = [json.loads(run(*common, *extra).stdout) for extra in ([], ["--extension", "dca"], [])]
    assert [(r["extension"], r["cache"]) for r in runs] == [
        ("selfextend", "miss"),
        ("dca", "miss"),
        ("selfextend", "hit"),
    ]
    plan = runs[0]["plan"]
    assert runs[0]["extension_settings"] == {"window": plan["W"], "group_size": plan["G"], "scale_base": None}
    assert runs[1]["extension_settings"] == {"chunk_size": 48, "local_window": 8, "chunk_len": 40}


def test_dca_verbose_line_and_selfextend_settings_refused(tiny_dir, tmp_path):
    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)
    result = run("summarize", doc, "--model", tiny_dir, "--max-new-tokens", 1, "--extension", "dca", "-v")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0].endswith(
        "; Dual Chunk Attention, chunks of 40 tokens (chunk size 48, local window 8)"
    )
    refused = run("summarize", doc, "--model", tiny_dir, "--extension", "dca", "-g", "4", "--log-scale", "64")
    assert refused.exit_code == 2
    assert refused.stderr.splitlines()[-1] == (
        "Error: --group-size, --log-scale set SelfExtend; --extension dca has no such setting"
    )


def test_eval_dca_method_answers_like_the_reference(tiny_dir, tmp_path, monkeypatch):
    from transformers import PreTrainedTokenizerFast

    from longlm_cli.evaluation import grid

    seen = []
    real = grid.answer_greedily
    monkeypatch.setattr(grid, "answer_greedily", lambda *a, **k: seen.append((a[3], k)) or real(*a, **k))
    results = tmp_path / "r.jsonl"
    args = ("--tasks", "vt", "--lengths", "700", "--samples", "1", "--methods", "dca", "--results", results)
    result = run("eval", "--model", tiny_dir, *args)
    assert result.exit_code == 0, result.output
    record = json.loads(results.read_text())
    assert (record["method"], record["extended"], len(seen)) == ("dca", True, 1)
    ((ids, kwargs),) = seen
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tiny_dir)
    model = LlamaForCausalLM.from_pretrained(tiny_dir).eval()
    out = []
    for _ in range(kwargs["max_new_tokens"]):
        token = int(reference_logits(model, torch.cat([ids, torch.tensor([out], dtype=ids.dtype)], 1))[0, -1].argmax())
        if token == tokenizer.eos_token_id:
            break
        out.append(token)
    assert record["answer"] == tokenizer.decode(out, skip_special_tokens=True)


def test_a_model_whose_config_carries_dual_chunk_settings_runs_them_beyond_its_window():
    """Qwen2.5-7B/14B-Instruct-1M ship `dual_chunk_attention_config`: their window is its original length (not
    max_position_embeddings, DCA's reach), and beyond it they run DCA with its chunk and local sizes, exactly,
    unless the user chooses SelfExtend."""
    from types import SimpleNamespace

    from longlm_cli.answering.pipeline import ExtensionSettings, configure, default_method, plan_for_length
    from longlm_cli.models import catalogue

    model = tiny_model("qwen2")
    model.config.max_position_embeddings = 1_000_000
    model.config.dual_chunk_attention_config = {
        "chunk_size": 40,
        "local_size": 6,
        "original_max_position_embeddings": L,
    }
    assert catalogue.context_window(model.config) == L
    own = DcaConfig(chunk_size=40, local_window=6)
    assert DcaConfig.for_model(model.config, L) == own != DEFAULT
    assert default_method(model.config, ExtensionSettings()) == "dca"
    assert default_method(model.config, ExtensionSettings(window=16)) == "selfextend"
    assert default_method(model.config, ExtensionSettings(method="selfextend")) == "selfextend"
    loaded = SimpleNamespace(model=model, context_window=L)
    plan, chosen, _ = plan_for_length(loaded, "tiny", N, ExtensionSettings(use_tuned=False))
    assert chosen.method_on(plan) == "dca"
    configure(model, plan, chosen)
    assert dca_settings(model) == own
    ids = _ids(N)
    assert _err(_logits(model, ids), reference_logits(model, ids, own)) < TOL
    plain = tiny_model("qwen2")
    assert default_method(plain.config, ExtensionSettings()) == "selfextend"
    assert DcaConfig.for_model(plain.config, L) == DEFAULT
