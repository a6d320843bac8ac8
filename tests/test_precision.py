"""The CPU's `auto` dtype: float32 without native bf16, else the measured winner, stored once per machine."""

import json

import pytest
import torch

from longlm_cli.runtime import precision
from longlm_cli.runtime.loader import pick_dtype

pytestmark = pytest.mark.dtype_choice  # these tests make the CPU dtype choice themselves: nothing pinned


@pytest.fixture
def flags(monkeypatch):
    def set_flags(*names):
        monkeypatch.setattr(precision, "cpu_flags", lambda: set(names) | {"avx2", "fma"})

    return set_flags


@pytest.fixture
def measured(monkeypatch):
    calls = []

    def set_speedups(prefill, decode):
        def measure():
            calls.append(1)
            return prefill, decode

        monkeypatch.setattr(precision, "measure_bf16_speedups", measure)
        return calls

    return set_speedups


def test_no_native_bf16_is_float32_without_measuring(flags, measured):
    flags()
    calls = measured(5.0, 5.0)
    choice = precision.cpu_dtype()
    assert (choice.dtype, calls) == ("float32", [])
    assert choice.reason == "float32: this CPU has no native bf16 instructions"
    assert pick_dtype("auto", "cpu") is torch.float32


@pytest.mark.parametrize(
    ("prefill", "decode", "expected"), [(1.8, 1.3, "bfloat16"), (1.8, 0.7, "float32"), (1.1, 1.5, "float32")]
)
def test_native_bf16_follows_the_measurement(flags, measured, prefill, decode, expected):
    flags("avx512_bf16")
    measured(prefill, decode)
    choice = precision.cpu_dtype()
    assert choice.dtype == expected
    assert choice.reason == (
        f"{expected}: bf16 measured {prefill:.2f}x float32 on prefill, {decode:.2f}x on decoding (avx512_bf16)"
    )
    assert pick_dtype("auto", "cpu") is getattr(torch, expected)


def test_the_choice_is_measured_once_and_kept(flags, measured, tmp_path):
    flags("amx_bf16", "avx512_bf16")
    calls = measured(2.0, 1.2)
    first = precision.cpu_dtype()
    second = precision.cpu_dtype()
    assert first == second and first.dtype == "bfloat16" and len(calls) == 1
    record = json.loads(precision.record_path().read_text())
    assert record["dtype"] == "bfloat16" and "torch" in record["machine"]


@pytest.mark.parametrize(
    "content",
    ['{"machine": "other", "dtype": "bfloat16", "reason": "x"}', '{"dtype": "float16"}', "[1, 2]", "not json"],
)
def test_a_foreign_or_crafted_record_is_measured_again(flags, measured, content, monkeypatch):
    """Another machine's record is measured again quietly; one longlm did not write, with one warning."""
    flags("avx512_bf16")
    calls = measured(0.5, 0.5)
    said = []
    monkeypatch.setattr(precision, "_ignored", lambda path, why: said.append(why))
    path = precision.record_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    assert precision.cpu_dtype().dtype == "float32" and len(calls) == 1
    assert len(said) == (0 if '"other"' in content else 1)


def test_an_unwritable_cache_still_gives_a_choice(flags, measured, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("LONGLM_CACHE_DIR", str(blocker / "cache"))
    flags("avx512_bf16")
    calls = measured(2.0, 2.0)
    assert precision.cpu_dtype().dtype == "bfloat16"
    assert precision.cpu_dtype().dtype == "bfloat16" and len(calls) == 2


def test_the_measurement_returns_two_positive_ratios():
    prefill, decode = precision.measure_bf16_speedups(repeats=1)
    assert prefill > 0 and decode > 0


def test_cuda_auto_is_bfloat16_without_measuring(flags, measured):
    flags()
    calls = measured(0.1, 0.1)
    assert pick_dtype("auto", "cuda") is torch.bfloat16 and calls == []


@pytest.mark.parametrize(
    ("dtype", "device", "rows", "enabled"),
    [(torch.bfloat16, "cpu", 1, False), (torch.bfloat16, "cpu", 2, True), (torch.float32, "cpu", 1, True)],
)
def test_decode_kernels_switch_onednn_off_only_for_one_bf16_row(dtype, device, rows, enabled):
    assert torch.backends.mkldnn.enabled
    with precision.decode_kernels(dtype, device, rows):
        assert torch.backends.mkldnn.enabled is enabled
    assert torch.backends.mkldnn.enabled


def test_decode_kernels_restore_onednn_after_an_error():
    with pytest.raises(KeyboardInterrupt), precision.decode_kernels(torch.bfloat16, "cpu", 1):
        raise KeyboardInterrupt
    assert torch.backends.mkldnn.enabled


def test_bf16_decode_without_onednn_gives_the_same_product():
    """The kernel switch changes speed, not the result: one bf16 row times a matrix with and without oneDNN
    agrees to bf16's rounding (both accumulate in float32)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 576, generator=gen).bfloat16()
    w = torch.randn(1536, 576, generator=gen).bfloat16()
    with_onednn = torch.nn.functional.linear(x, w).float()
    with precision.decode_kernels(torch.bfloat16, "cpu", 1):
        without = torch.nn.functional.linear(x, w).float()
    assert (with_onednn - without).abs().max().item() <= 1e-2 * with_onednn.abs().max().item()


@pytest.mark.parametrize(
    "kind", ["not json", "deep nesting", "a list", "wrong types", "infinite speedups", "link to /dev/zero", "fifo"]
)
def test_a_lying_machine_record_is_measured_again_and_leaves_nothing_behind(kind):
    """machine.json is state longlm wrote: anything else there is read as no record (no traceback, no hang),
    and a record that cannot be written leaves no temporary file."""
    import os
    from pathlib import Path

    key = precision.machine_key()
    path = precision.record_path()
    path.unlink(missing_ok=True)
    contents = {
        "not json": "{",
        "deep nesting": "[" * 100_000,
        "a list": "[1]",
        "wrong types": json.dumps({"machine": key, "dtype": "bfloat16", "reason": ["x"], "prefill_speedup": "9"}),
        "infinite speedups": json.dumps({"machine": key, "dtype": "bfloat16", "reason": "r", "prefill_speedup": 1e999}),
    }
    if kind in contents:
        path.write_text(contents[kind])
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        if not Path("/dev/zero").exists():
            pytest.skip("no /dev/zero on this platform")
        path.symlink_to("/dev/zero")
    found = precision.read_record(key)
    if kind == "wrong types":  # a usable record, its odd fields dropped
        assert found is not None and found.prefill_speedup is None and found.reason == "bf16 measured faster earlier"
    elif kind == "infinite speedups":
        assert found is not None and found.prefill_speedup is None
    else:
        assert found is None
    path.unlink()
    path.mkdir()  # a record that cannot be written
    precision.write_record(key, precision.CpuChoice("float32", "r"))
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".machine")) == []
