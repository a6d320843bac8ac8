"""The growing KV cache (runtime/kvcache.py) behaves as transformers' DynamicCache, without the O(L) copy."""

import pytest
import torch
from transformers import DynamicCache

from longlm_cli.engine.selfextend import apply_selfextend
from longlm_cli.runtime.generate import Session, prefill
from longlm_cli.runtime.kvcache import MIN_CAPACITY, GrowingLayer, growing_cache

from helpers import VOCAB, tiny_model


def test_layer_appends_in_place_and_crops_like_dynamic_layer():
    layer = GrowingLayer()
    torch.manual_seed(0)
    first = torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    keys, values = layer.update(*first)
    buffer = keys.data_ptr()
    assert torch.equal(keys, first[0]) and torch.equal(values, first[1]) and layer.get_seq_length() == 5
    step = torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4)
    keys, values = layer.update(*step)
    assert keys.data_ptr() == buffer  # no new allocation: written in place
    assert torch.equal(keys, torch.cat([first[0], step[0]], dim=-2))
    assert keys.stride(-1) == 1 and keys.stride(-2) == 4  # each head's rows stay dense
    layer.crop(-2)
    assert torch.equal(layer.keys, first[0][..., :4, :]) and layer.get_seq_length() == 4
    big = torch.randn(1, 2, MIN_CAPACITY, 4), torch.randn(1, 2, MIN_CAPACITY, 4)
    keys, _ = layer.update(*big)  # past the first buffer: grown, the kept rows copied
    assert torch.equal(keys, torch.cat([first[0][..., :4, :], big[0]], dim=-2))
    layer.reset()
    assert layer.get_seq_length() == 0


def test_session_with_growing_cache_gives_the_same_logits_as_dynamic_cache():
    model = apply_selfextend(tiny_model("llama"), group_size=4, window=8)
    ids = torch.randint(0, VOCAB, (1, 150), generator=torch.Generator().manual_seed(3))
    grown = Session.start(model)
    assert isinstance(grown.cache.layers[0], GrowingLayer)
    concat = Session(model=model, cache=DynamicCache(config=model.config), extra=dict(Session.start(model).extra))
    a, b = prefill(grown, ids[:, :120], chunk=32), prefill(concat, ids[:, :120], chunk=32)
    assert torch.allclose(a, b, atol=1e-5)
    for t in range(120, 150):
        a, b = grown.forward(ids[:, t : t + 1]), concat.forward(ids[:, t : t + 1])
        assert torch.allclose(a, b, atol=1e-5)


def test_sliding_window_layers_stay_as_transformers_builds_them():
    plain = DynamicCache(config=tiny_model("mistral-sliding").config)
    grown = growing_cache(tiny_model("mistral-sliding").config)
    assert [type(layer).__name__ for layer in grown.layers] == [
        "GrowingLayer" if type(layer).__name__ == "DynamicLayer" else type(layer).__name__ for layer in plain.layers
    ]
    assert any(type(layer).__name__ == "DynamicSlidingWindowLayer" for layer in grown.layers)


def test_a_prompt_token_beyond_the_embedding_is_one_model_error():
    import pytest

    from longlm_cli.errors import ModelError

    session = Session.start(tiny_model("llama"))
    with pytest.raises(ModelError, match=f"the prompt holds token id {VOCAB:,}, but the model has only {VOCAB:,}"):
        session.forward(torch.tensor([[1, 2, VOCAB]]))
    assert session.length == 0  # nothing was run


def test_a_reserved_session_allocates_its_buffers_once_and_gives_the_same_logits():
    model = apply_selfextend(tiny_model("llama"), group_size=4, window=8)
    ids = torch.randint(0, VOCAB, (1, 150), generator=torch.Generator().manual_seed(4))
    reserved, grown = Session.start(model, reserve=140), Session.start(model)
    pointers = set()
    for start in range(0, 120, 32):  # chunked prefill, then decoding up to the reservation
        a, b = (
            reserved.forward(ids[:, start : min(start + 32, 120)]),
            grown.forward(ids[:, start : min(start + 32, 120)]),
        )
        pointers.add(reserved.cache.layers[0].keys.data_ptr())
        assert torch.equal(a, b)
    for t in range(120, 140):
        assert torch.equal(reserved.forward(ids[:, t : t + 1]), grown.forward(ids[:, t : t + 1]))
        pointers.add(reserved.cache.layers[0].keys.data_ptr())
    layer = reserved.cache.layers[0]
    assert pointers == {layer.keys.data_ptr()} and layer._k.shape[-2] == 140  # one buffer, never regrown
    (grouped,) = reserved.extra.values()  # the grouped keys live in the KV cache's own buffer: none of their own
    assert all(entry["in_place"] and "buffer" not in entry for entry in grouped.layers.values())
    assert torch.equal(reserved.forward(ids[:, 140:141]), grown.forward(ids[:, 140:141]))  # beyond it: grown
    assert layer._k.shape[-2] == 280


@pytest.mark.parametrize("method", ["selfextend", "dca"])
@pytest.mark.parametrize("apart", [False, True])
def test_the_reserved_bytes_are_what_the_buffers_take(monkeypatch, method, apart):
    """reserved_bytes says what a reserved session allocates (keys and values; re-rotated keys too when they are
    kept apart instead of in place), and a reservation the memory cannot hold is refused before anything is
    allocated, with the figures."""
    from longlm_cli.engine.dca import ChunkKeyCache, apply_dca
    from longlm_cli.engine.selfextend import GroupedKeyCache
    from longlm_cli.errors import PlanError
    from longlm_cli.runtime import generate, loader
    from longlm_cli.runtime.kvcache import reserved_bytes

    model = tiny_model("llama")
    if method == "selfextend":
        apply_selfextend(model, group_size=4, window=8)
    else:
        apply_dca(model, chunk_size=24, local_window=4)
    session = Session.start(model, reserve=100)
    if apart:  # a key cache of their own (as on CUDA, or a caller's own): one more copy of the keys
        (name,) = session.extra
        session.extra = {name: (GroupedKeyCache if method == "selfextend" else ChunkKeyCache)(reserve=100)}
    session.forward(torch.randint(0, VOCAB, (1, 60), generator=torch.Generator().manual_seed(5)))
    (key_cache,) = session.extra.values()
    buffers = [t for layer in session.cache.layers for t in (layer._k, layer._v)]
    buffers += [entry["buffer"] for entry in key_cache.layers.values() if "buffer" in entry]
    taken = sum(t.numel() * t.element_size() for t in buffers)
    # 2 layers x 2 key heads x 16 x (key copies + values) x 100 tokens x 4 bytes
    assert taken == (76800 if apart else 51200)
    assert reserved_bytes(model.config, session.cache, 100, model.dtype, rotated_keys=apart) == taken
    monkeypatch.setattr(loader, "available_memory", lambda: taken - 1)
    with pytest.raises(PlanError) as refused:
        generate.check_memory(model, growing_cache(model.config, 100), session.extra, 100)
    size, what = f"{taken / 1024:.1f} KiB", "its KV cache and re-rotated keys" if apart else "its KV cache"
    assert str(refused.value) == (
        f"holding 100 tokens needs about {size} of memory for {what}; "
        f"{size} is available: use a shorter input or a smaller model"
    )
    if apart:
        return
    with pytest.raises(PlanError):  # what the commands call: refused before anything is allocated
        Session.start(model, reserve=100)
    assert Session.start(model, reserve=0).extra  # growing from empty is not checked
    monkeypatch.setattr(loader, "available_memory", lambda: None)  # memory that cannot be told: not refused
    assert Session.start(model, reserve=100).cache is not None
