import pytest
import torch
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from longlm_cli import LongLMError, UnsupportedModelError
from longlm_cli.engine.rope import LayerRope, rotate
from longlm_cli.engine.selfextend import GroupedKeyCache, apply_selfextend, remove_selfextend
from longlm_cli.runtime.generate import Session

from helpers import ARCHS, VOCAB, reference_logits, tiny_model

W, G, N = 16, 4, 200
TOL = 1e-4


def _ids(n, seed=1):
    return torch.randint(0, VOCAB, (1, n), generator=torch.Generator().manual_seed(seed))


def _logits(model, ids, **kwargs):
    with torch.no_grad():
        return model(ids, **kwargs).logits


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_matches_reference(arch):
    model = tiny_model(arch)
    ids = _ids(N)
    expected = reference_logits(model, ids, window=W, group_size=G)
    plain = _logits(model, ids)
    apply_selfextend(model, group_size=G, window=W)
    got = _logits(model, ids)
    assert (got - expected).abs().max().item() <= TOL
    if arch == "mistral-sliding":
        # Every layer has a 40-token sliding window: nothing to extend, the plain model's attention is kept.
        assert (got - plain).abs().max().item() <= TOL
    else:
        # Group attention is really exercised: the result differs from the plain model's.
        assert (got - plain).abs().max().item() > 1e-2


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_query_chunk_sizes_match_reference(chunk):
    model = tiny_model("llama")
    ids = _ids(N)
    expected = reference_logits(model, ids, window=W, group_size=G)
    apply_selfextend(model, group_size=G, window=W, query_chunk=chunk)
    assert (_logits(model, ids) - expected).abs().max().item() <= TOL


def test_softcap_path_matches_reference_with_odd_window():
    model = tiny_model("gemma2")
    ids = _ids(150)
    expected = reference_logits(model, ids, window=7, group_size=3)
    apply_selfextend(model, group_size=3, window=7)
    assert (_logits(model, ids) - expected).abs().max().item() <= TOL


@pytest.mark.parametrize("arch", ["llama", "gemma3", "phi"])
def test_short_input_is_unmodified(arch):
    model = tiny_model(arch)
    ids = _ids(W - 1)
    plain = _logits(model, ids)
    apply_selfextend(model, group_size=G, window=W)
    assert (_logits(model, ids) - plain).abs().max().item() <= TOL


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma2"])
def test_group_size_one_is_unmodified(arch):
    model = tiny_model(arch)
    ids = _ids(N)
    plain = _logits(model, ids)
    apply_selfextend(model, group_size=1, window=W)
    assert (_logits(model, ids) - plain).abs().max().item() <= TOL


def test_remove_restores_and_reapply_reconfigures():
    model = tiny_model("llama")
    ids = _ids(N)
    plain = _logits(model, ids)
    apply_selfextend(model, group_size=G, window=W)
    first = _logits(model, ids)
    apply_selfextend(model, group_size=2, window=8)
    second = _logits(model, ids)
    assert (second - reference_logits(model, ids, window=8, group_size=2)).abs().max().item() <= TOL
    assert (first - second).abs().max().item() > 1e-2
    remove_selfextend(model)
    assert model.config._attn_implementation == "sdpa"
    assert torch.equal(_logits(model, ids), plain)


@pytest.mark.parametrize("arch", ["llama", "llama-gqa4", "gemma3", "phi3"])
@pytest.mark.parametrize("use_grouped_cache", [True, False])
def test_chunked_prefill_append_and_decode_equal_full_forward(arch, use_grouped_cache):
    model = tiny_model(arch)
    apply_selfextend(model, group_size=G, window=W)
    ids = _ids(N)
    full = _logits(model, ids)
    cache = DynamicCache(config=model.config)
    extra = {"longlm_grouped_keys": GroupedKeyCache()} if use_grouped_cache else {}
    pieces = []
    # prefill in uneven chunks, then a second segment appended to the cache, then one-token decode
    bounds = [0, 37, 100, 150] + list(range(151, N + 1))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        pieces.append(_logits(model, ids[:, lo:hi], past_key_values=cache, use_cache=True, **extra))
    assert (torch.cat(pieces, dim=1) - full).abs().max().item() <= TOL


def test_grouped_cache_survives_cache_crop():
    """A follow-up question on a cropped cache (same document prefix) still gives the full forward's logits."""
    model = tiny_model("llama")
    apply_selfextend(model, group_size=G, window=W)
    doc, q1, q2 = _ids(120, 1), _ids(30, 2), _ids(30, 3)
    grouped = GroupedKeyCache()
    cache = DynamicCache(config=model.config)
    _logits(model, torch.cat([doc, q1], 1), past_key_values=cache, use_cache=True, longlm_grouped_keys=grouped)
    cache.crop(-30)
    got = _logits(model, q2, past_key_values=cache, use_cache=True, longlm_grouped_keys=grouped)
    full = _logits(model, torch.cat([doc, q2], 1))[:, 120:]
    assert (got - full).abs().max().item() <= TOL


def _session_logits(model, ids, bounds, *, in_place=True):
    """Logits of ``ids`` fed to one Session in pieces [bounds[i], bounds[i + 1]); the session, and the logits."""
    session = Session.start(model, reserve=ids.shape[1])
    if not in_place:  # the grouped keys in a buffer of their own, the KV cache's keys left at true positions
        session.extra = {"longlm_grouped_keys": GroupedKeyCache(reserve=ids.shape[1])}
    pieces = [
        _logits(model, ids[:, lo:hi], past_key_values=session.cache, use_cache=True, **session.extra)
        for lo, hi in zip(bounds[:-1], bounds[1:])
    ]
    return session, torch.cat(pieces, dim=1)


@pytest.mark.parametrize("arch", ["llama", "llama-gqa4", "gemma3", "phi3"])
def test_grouped_keys_in_place_match_the_full_forward(arch):
    """A session re-rotates keys older than the window in the KV cache's own buffer (no copy of the keys): the
    logits are those of the full forward (chunked prefill, append, decode), and the cache's old keys are the
    grouped keys a session keeping them apart holds, its window the true keys."""
    model = tiny_model(arch)
    apply_selfextend(model, group_size=G, window=W)
    ids = _ids(N)
    bounds = [0, 37, 100, 150] + list(range(151, N + 1))
    session, got = _session_logits(model, ids, bounds)
    apart, expected = _session_logits(model, ids, bounds, in_place=False)
    assert (got - _logits(model, ids)).abs().max().item() <= TOL
    assert torch.equal(got, expected)
    (grouped,) = session.extra.values()
    (kept,) = apart.extra.values()
    counts = session.rotated_in_place()
    assert counts and set(counts.values()) == {N - W}  # every extended layer: all but the last window
    assert not any("buffer" in entry for entry in grouped.layers.values())
    for i, layer in enumerate(session.cache.layers):
        true = apart.cache.layers[i].keys
        if i in counts:
            assert torch.equal(layer.keys[:, :, : N - W], kept.layers[i]["buffer"][:, :, : N - W])
            assert (layer.keys[:, :, : N - W] - true[:, :, : N - W]).abs().max().item() > 1e-2
        assert torch.equal(layer.keys[:, :, N - W :], true[:, :, N - W :])  # the window: true keys


def test_a_cropped_in_place_session_turns_its_keys_back_for_the_next_question():
    """As chat does: crop the cache back past keys re-rotated in place, ask another question; its logits are the
    full forward's of the document and that question."""
    model = tiny_model("llama")
    apply_selfextend(model, group_size=G, window=W)
    doc, q1, q2 = _ids(120, 1), _ids(30, 2), _ids(30, 3)
    session = Session.start(model, reserve=150)
    _logits(model, torch.cat([doc, q1], 1), past_key_values=session.cache, use_cache=True, **session.extra)
    session.cache.crop(-30)
    got = _logits(model, q2, past_key_values=session.cache, use_cache=True, **session.extra)
    full = _logits(model, torch.cat([doc, q2], 1))[:, 120:]
    assert (got - full).abs().max().item() <= TOL


def test_in_place_keys_follow_a_change_of_settings_within_a_session():
    """Reconfiguring SelfExtend between two forward calls over one cache: the in-place keys are turned back and
    re-rotated for the new group, as a session keeping its grouped keys apart computes it."""
    model = tiny_model("llama")
    ids = _ids(N)
    results = []
    for in_place in (True, False):
        apply_selfextend(model, group_size=G, window=W)
        session, first = _session_logits(model, ids[:, :120], [0, 60, 120], in_place=in_place)
        apply_selfextend(model, group_size=2, window=W)
        rest = _logits(model, ids[:, 120:], past_key_values=session.cache, use_cache=True, **session.extra)
        results.append(torch.cat([first, rest], 1))
    assert (results[0] - results[1]).abs().max().item() <= 1e-5


def test_bfloat16_in_place_equals_the_grouped_keys_kept_apart():
    """In bf16 too, re-rotating in place reads the same true keys and stores the same rounded grouped keys."""
    model = tiny_model("llama").to(torch.bfloat16)
    apply_selfextend(model, group_size=G, window=W)
    ids = _ids(N)
    bounds = [0, 64, 128, 190] + list(range(191, N + 1))
    _, got = _session_logits(model, ids, bounds)
    _, apart = _session_logits(model, ids, bounds, in_place=False)
    assert torch.equal(got, apart)


def test_keys_rotated_in_place_reaching_the_attention_as_a_copy_are_refused():
    from longlm_cli.engine import keycache

    cache = GroupedKeyCache()
    cache.layers[0] = {"signature": (), "in_place": True, "n": 3, "shift": None}
    with pytest.raises(LongLMError, match="re-rotated keys of the KV cache reached the attention as a copy"):
        keycache.rotated_keys(torch.zeros(1, 1, 8, 4), 4, 8, cache, 0, (G, 0), lambda lo, hi: None)


@pytest.mark.parametrize("arch", ["llama", "phi"])
def test_rotation_composes(arch):
    """Rotating q already rotated at p by d more positions equals the model's own rotation at p + d."""
    model = tiny_model(arch)
    rotary = model.model.rotary_emb
    D = 16
    x = torch.randn(1, 2, 300, D, generator=torch.Generator().manual_seed(0))
    p = torch.arange(300) * 7
    d = -(p * 3) // 4 + 5

    def model_rotate(x, pos):
        cos, sin = rotary(x, pos[None])
        R = cos.shape[-1]
        xr = x[..., :R]
        rot = torch.cat((-xr[..., R // 2 :], xr[..., : R // 2]), -1)
        return torch.cat((xr * cos[None] + rot * sin[None], x[..., R:]), -1)

    got = rotate(model_rotate(x, p), d, LayerRope(rotary.inv_freq))
    assert (got - model_rotate(x, p + d)).abs().max().item() < 1e-4


def test_refuses_model_without_rope():
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=64))
    with pytest.raises(UnsupportedModelError, match=r"GPT2LMHeadModel \(model_type 'gpt2'\) has no rotary"):
        apply_selfextend(model, group_size=G, window=W)


def test_refuses_dynamic_rope():
    config = LlamaConfig(
        **{
            **{k: v for k, v in __import__("helpers").BASE.items()},
            "rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0},
        }
    )
    model = LlamaForCausalLM(config)
    with pytest.raises(UnsupportedModelError, match="rope type 'dynamic'"):
        apply_selfextend(model, group_size=G, window=W)


@pytest.mark.parametrize("kwargs", [dict(group_size=0, window=16), dict(group_size=4, window=0)])
def test_rejects_bad_settings(kwargs):
    with pytest.raises(LongLMError):
        apply_selfextend(tiny_model("llama"), **kwargs)


def test_plain_torch_path_matches_reference(monkeypatch):
    """The block kernel other devices use (and softcapping uses) agrees with the reference too."""
    from longlm_cli.engine import blocks

    monkeypatch.setattr(blocks, "attend", blocks.attend_torch)
    model = tiny_model("qwen2")
    ids = _ids(N)
    expected = reference_logits(model, ids, window=W, group_size=G)
    apply_selfextend(model, group_size=G, window=W)
    assert (_logits(model, ids) - expected).abs().max().item() <= TOL


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("arch", ["llama", "gemma2", "phi"])
def test_cuda_matches_cpu_float32(arch):
    """CUDA in bfloat16 against the float32 CPU path: bf16 keeps 8 mantissa bits, so logits of these tiny
    models (magnitude ~10) agree to about 5e-2."""
    model = tiny_model(arch)
    ids = _ids(N)
    apply_selfextend(model, group_size=G, window=W)
    cpu = _logits(model, ids)
    model.to("cuda", torch.bfloat16)
    gpu = _logits(model, ids.cuda()).float().cpu()
    assert (gpu - cpu).abs().max().item() <= 5e-2 * max(1.0, cpu.abs().max().item())


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("arch", ["llama", "gemma2", "phi", "gemma3"])
def test_flex_attention_path_matches_reference(monkeypatch, arch):
    """The CUDA path (FlexAttention, two block-masked calls merged by log-sum-exp), run eagerly on the CPU."""
    from longlm_cli.engine import selfextend

    monkeypatch.setattr(selfextend, "_use_flex", lambda query: True)
    model = tiny_model(arch)
    ids = _ids(N)
    expected = reference_logits(model, ids, window=W, group_size=G)
    apply_selfextend(model, group_size=G, window=W)
    assert (_logits(model, ids) - expected).abs().max().item() <= TOL
    # and chunked prefill plus decode through the same path
    cache, grouped = DynamicCache(config=model.config), GroupedKeyCache()
    pieces = [
        _logits(model, ids[:, lo:hi], past_key_values=cache, use_cache=True, longlm_grouped_keys=grouped)
        for lo, hi in [(0, 90), (90, 198), (198, 199), (199, 200)]
    ]
    assert (torch.cat(pieces, 1) - expected).abs().max().item() <= TOL


def test_bfloat16_on_cpu_is_close_to_float32_reference():
    """bf16 keeps 8 mantissa bits (about 3 significant digits), so compare to 5% of the logits' scale."""
    model = tiny_model("llama")
    ids = _ids(N)
    expected = reference_logits(model, ids, window=W, group_size=G)
    apply_selfextend(model, group_size=G, window=W)
    model.to(torch.bfloat16)
    got = _logits(model, ids).float()
    assert (got - expected).abs().max().item() <= 5e-2 * expected.abs().max().item()


def test_attention_at_32k_tokens_matches_direct_softmax():
    """The block decomposition at the passkey table's largest size: the last 2,048-query prefill chunk of a
    32,767-token sequence with SmolLM2's head size and RoPE base, W=1024, G=9, checked row by row against one
    softmax over full score rows built directly."""
    import math
    import types

    from longlm_cli.engine import selfextend as se

    K, Q, H, Hkv, D, W, G = 32767, 2048, 3, 1, 64, 1024, 9
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, H, Q, D, generator=gen) * 2
    k = torch.randn(1, Hkv, K, D, generator=gen) * 2
    v = torch.randn(1, Hkv, K, D, generator=gen)
    rope = LayerRope(1.0 / (1e5 ** (torch.arange(0, D, 2, dtype=torch.float32) / D)))
    module = types.SimpleNamespace(layer_idx=0)
    setattr(module, se._LAYER_ATTR, se.LayerSpec(config=se.SelfExtendConfig(group_size=G, window=W), rope=rope))
    first = K - Q
    out, _ = se.selfextend_attention(module, q, k, v, None, position_ids=torch.arange(first, K)[None])
    out = out.transpose(1, 2)  # [B, H, Q, D]
    kk, vv = k.expand(1, H, K, D), v.expand(1, H, K, D)
    kg = rotate(kk, se.grouped_key_delta(torch.arange(K), G), rope)
    for row in (0, 1023, 1024, Q - 1):
        i = first + row
        qi = q[:, :, row : row + 1]
        qg = rotate(qi, se.grouped_query_delta(torch.tensor([i]), G, W), rope)
        near = (qi @ kk[:, :, : i + 1].transpose(-1, -2)) / math.sqrt(D)
        far = (qg @ kg[:, :, : i + 1].transpose(-1, -2)) / math.sqrt(D)
        scores = torch.where(i - torch.arange(i + 1) < W, near, far)  # [1, H, 1, i + 1]
        expected = torch.softmax(scores.double(), -1).float() @ vv[:, :, : i + 1]
        assert (expected[:, :, 0] - out[:, :, row]).abs().max().item() < 1e-4


@pytest.mark.parametrize("heads, rows, keys", [((8, 2), 1, 500), ((9, 3), 1, 700), ((6, 6), 1, 300), ((16, 2), 7, 500)])
def test_a_block_without_mask_folds_its_query_heads_and_matches_the_plain_torch_block(heads, rows, keys):
    """Blocks without a causal mask (one decoding row, or the far part of a prefill chunk) go to the flash kernel
    with each key head's query heads folded into one query axis; they agree with the plain-torch reference on a
    strided key view (as the growing cache hands it out) and a query that is a transposed view, and with the
    kernel unfolded."""
    from longlm_cli.engine import blocks

    H, hkv = heads
    gen = torch.Generator().manual_seed(0)
    q = (torch.randn(1, rows, H, 32, generator=gen) * 3).transpose(1, 2)  # [1, H, rows, 32], not contiguous
    k = torch.randn(1, hkv, keys + 100, 32, generator=gen)[:, :, :keys]
    v = torch.randn(1, hkv, keys + 100, 32, generator=gen)[:, :, :keys]
    out, lse = blocks.attend(q, k, v, scale=32**-0.5, causal=False, softcap=None)
    ref_out, ref_lse = blocks.attend_torch(q, k, v, scale=32**-0.5, causal=False, softcap=None)
    assert out.shape == ref_out.shape and lse.shape == ref_lse.shape
    assert (out - ref_out).abs().max().item() <= 1e-5 and (lse - ref_lse).abs().max().item() <= 1e-5
    unfolded = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, scale=32**-0.5)
    assert (out - unfolded[0]).abs().max().item() <= 1e-6 and (lse - unfolded[1]).abs().max().item() <= 1e-6
    half = blocks.attend(q.bfloat16(), k.bfloat16(), v.bfloat16(), scale=32**-0.5, causal=False, softcap=None)
    assert half[0].dtype == torch.bfloat16 and half[0].shape == ref_out.shape  # bf16 folds the same way
    assert (half[0].float() - ref_out).abs().max().item() <= 5e-2 * ref_out.abs().max().item()


def test_bfloat16_decode_on_cpu_is_close_to_float32_reference():
    """Decoding steps in bf16 run with oneDNN off (runtime.precision.decode_kernels); the logits of a prefill
    followed by one-token steps stay within bf16's tolerance of the float32 reference."""
    model = tiny_model("llama")
    ids = _ids(N)
    expected = reference_logits(model, ids, window=W, group_size=G)[:, N - 4 : N - 1]  # [1, 3, V]
    apply_selfextend(model, group_size=G, window=W)
    model.to(torch.bfloat16)
    session = Session.start(model)
    pieces = [session.forward(ids[:, : N - 3])[:, None]]
    pieces += [session.forward(ids[:, t : t + 1])[:, None] for t in range(N - 3, N - 1)]
    got = torch.cat(pieces, 1)
    assert torch.backends.mkldnn.enabled
    assert (got - expected).abs().max().item() <= 5e-2 * expected.abs().max().item()


@pytest.mark.parametrize(
    "config, refused",
    [
        ({"model_type": "llama", "rope_parameters": {"rope_type": "default"}}, None),
        ({"model_type": "qwen3_next", "layer_types": ["linear_attention", "full_attention"]}, "recurrent layers"),
        ({"model_type": "zamba2", "layers_block_type": ["mamba", "hybrid"]}, "recurrent layers"),
        ({"model_type": "jamba"}, "recurrent layers"),
        ({"model_type": "recurrent_gemma", "block_types": ["recurrent", "attention"]}, "recurrent layers"),
        ({"model_type": "qwen2_vl", "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}}, "M-RoPE"),
        ({"text_config": {"model_type": "x", "rope_parameters": {"mrope_section": [8, 12, 12]}}}, "M-RoPE"),
    ],
)
def test_models_the_methods_cannot_serve_exactly_are_named(config, refused):
    from longlm_cli.models.architecture import extension_refusal

    found = extension_refusal(config)
    assert (found is None) if refused is None else (refused in found)


def test_mrope_and_sliding_only_models_are_refused_in_one_line():
    from longlm_cli.answering.pipeline import ExtensionSettings, configure
    from longlm_cli.errors import UnsupportedModelError as Refused
    from longlm_cli.planning.plan import make_plan

    model = tiny_model("qwen2")
    model.config.rope_parameters = {**model.config.rope_parameters, "mrope_section": [2, 3, 3]}
    with pytest.raises(Refused, match=r"Qwen2ForCausalLM \(model_type 'qwen2'\) uses multimodal rotary positions"):
        apply_selfextend(model, group_size=G, window=W)
    sliding = tiny_model("mistral-sliding")
    plan = make_plan(context_window=64, length=200)
    with pytest.raises(Refused, match="every layer of this model attends only to its last 40 tokens") as refused:
        configure(sliding, plan, ExtensionSettings())
    assert "\n" not in str(refused.value)
    configure(sliding, make_plan(context_window=64, length=50), ExtensionSettings())  # inside L: as it is
    configure(tiny_model("gemma2"), plan, ExtensionSettings())  # a full-attention layer among sliding ones
