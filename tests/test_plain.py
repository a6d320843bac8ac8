"""engine/plain.py: the plain model's CPU attention (SDPA but for decoding steps, folded, and for prefill chunks
after cached keys, without a mask) and the lone-row rule of engine/blocks.py, against transformers' SDPA and a
float32 softmax reference."""

import pytest
import torch

from longlm_cli.engine import blocks
from longlm_cli.engine.plain import PLAIN_CPU_ATTENTION, plain_cpu_mask, use_plain_cpu_attention
from longlm_cli.runtime.generate import Session, prefill

from helpers import VOCAB, tiny_model


def _logits(model, attention: str, ids: torch.Tensor, steps: int) -> torch.Tensor:
    """The logits of a chunked prefill of ``ids`` [1, n] minus its last ``steps`` tokens, then of each of those
    tokens decoded one at a time: [steps + 1, V]."""
    model.set_attn_implementation(attention)
    session = Session.start(model)
    out = [prefill(session, ids[:, :-steps], chunk=16)]
    out += [session.forward(ids[:, t : t + 1]) for t in range(ids.shape[1] - steps, ids.shape[1])]
    return torch.cat(out)


# 2 and 4 query heads per key head; phi: 1; gemma3: sliding layers (masked as SDPA's) beside full ones; mistral:
# all layers sliding, the window inside the 40 tokens
@pytest.mark.parametrize("arch", ["llama", "llama-gqa4", "phi", "gemma3", "mistral-sliding"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_plain_cpu_attention_prefills_and_decodes_as_sdpa_does(arch, dtype):
    model = tiny_model(arch).to(dtype)
    ids = torch.randint(3, VOCAB, (1, 60), generator=torch.Generator().manual_seed(1))
    sdpa, plain = _logits(model, "sdpa", ids, 6), _logits(model, PLAIN_CPU_ATTENTION, ids, 6)
    scale = sdpa.abs().max()
    assert (sdpa - plain).abs().max() <= (1e-5 if dtype == torch.float32 else 2e-2) * scale


def test_a_chunk_after_cached_keys_gets_no_mask_and_every_other_chunk_sdpas():
    def mask(**kw):
        return plain_cpu_mask(batch_size=1, **{"q_length": 4, "kv_length": 10, "q_offset": 6, **kw})

    assert mask() is None  # the last 4 of 10 keys: cached keys unmasked, the chunk's own causal
    assert mask(attention_mask=torch.ones(1, 10, dtype=torch.bool)) is None
    assert mask(q_length=10, q_offset=0) is None  # SDPA's own is_causal
    padded = mask(attention_mask=torch.tensor([[False] + [True] * 9]))
    assert padded.shape == (1, 1, 4, 10) and not padded[..., 0].any() and padded[0, 0, 0].sum() == 6
    sliding = mask(local_size=3)
    assert sliding is not None and sliding.shape == (1, 1, 4, 10)
    static = mask(q_offset=0)  # a static cache's first chunk: SDPA would read None as top-left, so it is a mask
    assert static is not None and torch.equal(static[0, 0, :, :4], torch.ones(4, 4, dtype=torch.bool).tril())


def test_plain_cpu_attention_is_chosen_for_bf16_models_on_the_cpu_only():
    bf16, fp32 = tiny_model("llama").to(torch.bfloat16), tiny_model("llama")
    assert use_plain_cpu_attention(bf16).config._attn_implementation == PLAIN_CPU_ATTENTION
    assert use_plain_cpu_attention(fp32).config._attn_implementation == "sdpa"  # the engine's tested reference
    eager = tiny_model("llama").to(torch.bfloat16)
    eager.set_attn_implementation("eager")
    assert use_plain_cpu_attention(eager).config._attn_implementation == "eager"  # a choice made elsewhere stays


@pytest.mark.parametrize("heads", [(4, 4), (4, 2)])  # one row per key head (padded) and two (folded)
def test_a_lone_bf16_row_gives_the_reference_attention(heads):
    H, hkv = heads
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, H, 1, 16, generator=gen).bfloat16()
    k, v = (torch.randn(1, hkv, 300, 16, generator=gen).bfloat16() for _ in range(2))
    out, lse = blocks.attend(q, k, v, scale=0.25, causal=False, softcap=None)
    kf, vf = (x.float().repeat_interleave(H // hkv, dim=1) for x in (k, v))
    scores = (q.float() @ kf.transpose(-1, -2)) * 0.25  # [1, H, 1, 300]
    assert out.shape == (1, H, 1, 16) and out.dtype == torch.bfloat16 and lse.shape == (1, H, 1)
    assert torch.allclose(out.float(), torch.softmax(scores, -1) @ vf, atol=2e-2)
    assert torch.allclose(lse, torch.logsumexp(scores, -1), atol=2e-2)
