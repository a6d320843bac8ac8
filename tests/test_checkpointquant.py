"""A checkpoint streamed tensor by tensor into int4/int8 (runtime/checkpointquant.py) is the same model as the
checkpoint loaded whole and then quantized, for one safetensors file and for shards; checkpoints it cannot
stream are left to the 16-bit path."""

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from longlm_cli.runtime.checkpointquant import checkpoint_files, quantized_checkpoint
from longlm_cli.runtime.quantize import quantize_model


def _whole_then_quantized(directory, form):
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    quantize_model(model, form, torch.float32)
    return model


def _logits(model):
    ids = torch.randint(0, model.config.vocab_size, (1, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("form", ["int4", "int8"])
def test_streamed_equals_loaded_whole_then_quantized(tiny_dir, form):
    tokenizer, streamed = quantized_checkpoint(tiny_dir, form, torch.float32, trust_remote_code=False)
    assert tokenizer is not None and streamed.longlm_weights == form
    assert torch.equal(_logits(streamed.eval()), _logits(_whole_then_quantized(tiny_dir, form)))


def test_shards_are_read_through_their_index(tmp_path, tiny_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size="100KB")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (tiny_dir / name).exists():
            shutil.copy(tiny_dir / name, sharded / name)
    files = checkpoint_files(sharded)
    assert files is not None and len(files) > 1
    _, streamed = quantized_checkpoint(sharded, "int4", torch.float32, trust_remote_code=False)
    assert torch.equal(_logits(streamed.eval()), _logits(_whole_then_quantized(tiny_dir, "int4")))


def test_what_cannot_be_streamed_is_left_to_the_16_bit_path(tmp_path, tiny_dir):
    renamed = tmp_path / "renamed"
    shutil.copytree(tiny_dir, renamed)
    from safetensors.torch import load_file, save_file

    tensors = load_file(renamed / "model.safetensors")
    save_file({f"old.{k}": v for k, v in tensors.items()}, renamed / "model.safetensors", metadata={"format": "pt"})
    assert quantized_checkpoint(renamed, "int4", torch.float32, trust_remote_code=False) is None
    assert quantized_checkpoint(tiny_dir, "int4", torch.float32, trust_remote_code=True) is None
    (renamed / "model.safetensors").unlink()
    assert checkpoint_files(renamed) is None
    (renamed / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "../elsewhere.safetensors"}}))
    assert checkpoint_files(renamed) is None


def test_load_model_streams_a_checkpoint_and_never_loads_it_whole(tiny_dir, monkeypatch):
    from longlm_cli.runtime import loader, quantize

    def whole(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded whole and then quantized")

    monkeypatch.setattr(quantize, "quantize_model", whole)
    loaded = loader.load_model(str(tiny_dir), device="cpu", dtype="float32", quantize="int4")
    assert loaded.weights.form == "int4"
    monkeypatch.undo()
    assert torch.equal(_logits(loaded.model), _logits(_whole_then_quantized(tiny_dir, "int4")))
