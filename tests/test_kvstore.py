"""A float32 model's KV cache kept in bfloat16 (runtime/kvcache.py): half the bytes, answers as with float32."""

import pytest
import torch

from longlm_cli.engine import blocks
from longlm_cli.engine.dca import apply_dca
from longlm_cli.engine.plain import PLAIN_CPU_ATTENTION, use_plain_cpu_attention
from longlm_cli.engine.selfextend import apply_selfextend
from longlm_cli.errors import ModelError
from longlm_cli.runtime.generate import Session, prefill
from longlm_cli.runtime.kvcache import (
    GrowingLayer,
    choose_kv_dtype,
    growing_cache,
    kv_dtype_of,
    reads_narrow_cache,
    reserved_bytes,
    set_kv_dtype,
)
from longlm_cli.runtime.loader import kv_dtype_for, pick_kv_dtype

from helpers import VOCAB, tiny_model


def test_a_layer_keeps_what_it_is_given_rounded_to_its_storage_type():
    layer = GrowingLayer(dtype=torch.bfloat16)
    torch.manual_seed(0)
    keys, values = layer.update(torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4))
    step = torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4)
    keys, values = layer.update(*step)
    assert keys.dtype == values.dtype == torch.bfloat16 and keys.shape == (1, 2, 6, 4)
    assert torch.equal(keys[..., 5:, :], step[0].bfloat16()) and torch.equal(values[..., 5:, :], step[1].bfloat16())


def test_auto_is_bfloat16_on_the_cpu_and_the_models_type_elsewhere():
    assert choose_kv_dtype("auto", "cpu", torch.float32) == torch.bfloat16
    assert choose_kv_dtype("auto", "cpu", torch.bfloat16) == torch.bfloat16
    assert choose_kv_dtype("auto", "cuda", torch.float16) == torch.float16
    assert choose_kv_dtype("float32", "cpu", torch.float32) == torch.float32
    assert choose_kv_dtype("bfloat16", "cpu", torch.float32) == torch.bfloat16
    with pytest.raises(ModelError, match="^--kv-dtype float32 needs a float32 model; this one computes in bfloat16"):
        pick_kv_dtype("float32", "cpu", torch.bfloat16)
    with pytest.raises(ModelError, match=r"needs a bfloat16 model \(or a float32 one on the CPU\); .* on cuda"):
        pick_kv_dtype("bfloat16", "cuda", torch.float32)
    with pytest.raises(ModelError, match="unknown KV cache dtype 'int8'"):
        pick_kv_dtype("int8", "cpu", torch.float32)


def test_a_bfloat16_cache_takes_half_the_bytes():
    model = tiny_model("llama")
    cache = growing_cache(model.config, 100, torch.bfloat16)
    half = reserved_bytes(model.config, cache, 100, torch.bfloat16, rotated_keys=False)
    assert 2 * half == reserved_bytes(model.config, cache, 100, torch.float32, rotated_keys=False)
    set_kv_dtype(model, torch.bfloat16)
    use_plain_cpu_attention(model, torch.bfloat16)
    session = Session.start(model, reserve=100)
    session.forward(torch.randint(0, VOCAB, (1, 10)))
    assert sum(t.numel() * t.element_size() for layer in session.cache.layers for t in (layer._k, layer._v)) == half


def test_an_attention_that_cannot_read_a_narrower_cache_keeps_the_models_type():
    model = tiny_model("llama")
    model.set_attn_implementation("eager")
    assert kv_dtype_for(model, torch.bfloat16) == torch.float32 and kv_dtype_of(model) == torch.float32
    sdpa = tiny_model("llama")
    sdpa.set_attn_implementation("sdpa")
    assert kv_dtype_for(sdpa, torch.bfloat16) == torch.bfloat16 and kv_dtype_of(sdpa) == torch.bfloat16
    assert sdpa.config._attn_implementation == PLAIN_CPU_ATTENTION and reads_narrow_cache(sdpa)


def test_the_kernel_reads_bfloat16_keys_under_float32_queries():
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(1, 4, 3, 16, generator=gen)
    k, v = torch.randn(1, 2, 40, 16, generator=gen), torch.randn(1, 2, 40, 16, generator=gen)
    for causal in (False, True):
        out, lse = blocks.attend(q, k.bfloat16(), v.bfloat16(), scale=0.25, causal=causal, softcap=None)
        ref, ref_lse = blocks.attend_torch(q, k, v, scale=0.25, causal=causal, softcap=None)
        torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)
        torch.testing.assert_close(lse, ref_lse, atol=3e-2, rtol=3e-2)
    capped, _ = blocks.attend(q, k.bfloat16(), v.bfloat16(), scale=0.25, causal=True, softcap=5.0)  # plain torch
    torch.testing.assert_close(
        capped, blocks.attend_torch(q, k, v, scale=0.25, causal=True, softcap=5.0)[0], atol=3e-2, rtol=3e-2
    )


def _switched(method: str, arch: str, kv_dtype):
    """A tiny model with ``method`` on, its cache in ``kv_dtype`` where its attention reads one (as loaded)."""
    model = tiny_model(arch)
    kv_dtype_for(model, kv_dtype)  # as load_model does: an eager attention keeps float32
    if method == "selfextend":
        apply_selfextend(model, group_size=4, window=8)
    elif method == "dca":
        apply_dca(model, chunk_size=24, local_window=4)
    return model


@pytest.mark.parametrize("method", ["none", "selfextend", "dca"])
@pytest.mark.parametrize("arch", ["llama", "gemma2", "gemma3"])
def test_a_bfloat16_cache_answers_as_a_float32_one(method, arch):
    """Prefill in chunks, then decoding: the logits of a bfloat16 cache stay within bf16 rounding of a float32
    cache's, and the greedy next tokens agree."""
    ids = torch.randint(0, VOCAB, (1, 130), generator=torch.Generator().manual_seed(2))
    wide, narrow = (Session.start(_switched(method, arch, kv), reserve=130) for kv in (torch.float32, torch.bfloat16))
    rows = [(prefill(wide, ids[:, :100], chunk=32), prefill(narrow, ids[:, :100], chunk=32))]
    rows += [(wide.forward(ids[:, t : t + 1]), narrow.forward(ids[:, t : t + 1])) for t in range(100, 130)]
    expected = torch.float32 if arch == "gemma2" else torch.bfloat16  # gemma2 loads eager: it keeps float32
    for session, dtype in ((wide, torch.float32), (narrow, expected)):  # sliding-window layers keep theirs
        assert {layer.keys.dtype for layer in session.cache.layers if isinstance(layer, GrowingLayer)} == {dtype}
    for a, b in rows:
        assert (a - b).abs().max() <= 0.03 * a.abs().max()
    agree = sum(int(a.argmax()) == int(b.argmax()) for a, b in rows)
    assert agree >= len(rows) - 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_decoding_step_split_among_threads_is_the_same_softmax(dtype):
    """3 key heads on 2 threads: the keys go to the kernel in two parts (and a remainder), merged exactly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gen = torch.Generator().manual_seed(3)
        q = torch.randn(1, 9, 1, 16, generator=gen).to(dtype)
        k, v = (torch.randn(1, 3, 2 * blocks.SPLIT_MIN_KEYS + 5, 16, generator=gen).to(dtype) for _ in range(2))
        assert blocks.key_parts(3, k.shape[2], 3) == 2 and blocks.key_parts(4, k.shape[2], 3) == 1
        assert blocks.key_parts(3, k.shape[2], 64) == 1  # a prefill chunk is not split
        out, lse = blocks.attend(q, k, v, scale=0.25, causal=False, softcap=None)
        ref, ref_lse = blocks.attend_torch(q, k, v, scale=0.25, causal=False, softcap=None)
        tolerance = 1e-5 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(out.float(), ref.float(), atol=tolerance, rtol=tolerance)
        torch.testing.assert_close(lse, ref_lse, atol=tolerance, rtol=tolerance)
    finally:
        torch.set_num_threads(threads)
