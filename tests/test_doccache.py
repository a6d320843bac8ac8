"""The persistent document cache: hits give the same answer and logits, misses on every key part, corruption."""

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from longlm_cli.answering.pipeline import configure, prefill_cached, prompt_cache_key
from longlm_cli.answering.templates import chat_token_ids, load_template, user_message
from longlm_cli.doccache import store as doccache
from longlm_cli.doccache.mac import SECRET_NAME, cache_secret, signed
from longlm_cli.doccache.store import DocCacheSettings, list_entries
from longlm_cli.paths import DIRECTORY_LOCK
from longlm_cli.planning.plan import make_plan
from longlm_cli.runtime.generate import Session, prefill
from longlm_cli.runtime.loader import load_model

from helpers import CORPUS, reference_answer, run

FIXED = ("-w", 8, "-g", 16)  # a fixed plan, so that questions of any length share the document entry


def kv_files():
    return sorted((doccache.kv_dir()).glob("*.safetensors"))


def ask_json(tiny_dir, doc, question, *args, tokens=8):
    result = run("ask", doc, question, "--model", tiny_dir, "--max-new-tokens", tokens, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


@pytest.fixture
def doc(tmp_path):
    path = tmp_path / "ships.txt"
    path.write_text(CORPUS)
    return path


def test_second_ask_hits_and_gives_the_same_answer(tiny_dir, doc):
    first, _ = ask_json(tiny_dir, doc, "What colour is the ledger?")
    second, _ = ask_json(tiny_dir, doc, "What colour is the ledger?")
    off, _ = ask_json(tiny_dir, doc, "What colour is the ledger?", "--no-cache")
    assert (first["cache"], second["cache"], off["cache"]) == ("miss", "hit", "off")
    assert first["answer"] == second["answer"] == off["answer"]
    expected, _, _ = reference_answer(tiny_dir, "ask", CORPUS, "What colour is the ledger?", max_new_tokens=8)
    assert second["answer"] == expected
    assert len(kv_files()) == 1


def test_summarize_text_output_is_identical_and_verbose_says_hit(tiny_dir, doc):
    args = ("summarize", doc, "--model", tiny_dir, "--max-new-tokens", 10, "-v")
    first, second = run(*args), run(*args)
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert first.stdout == second.stdout
    assert first.stderr.splitlines()[-1].endswith("document cache miss")
    assert second.stderr.splitlines()[-1].endswith("document cache hit")


def test_a_different_question_reuses_the_document(tiny_dir, doc):
    ask_json(tiny_dir, doc, "Who counted the ships?", *FIXED)
    data, _ = ask_json(tiny_dir, doc, "Which harbour?", *FIXED)
    fresh, _ = ask_json(tiny_dir, doc, "Which harbour?", *FIXED, "--no-cache")
    assert data["cache"] == "hit" and data["answer"] == fresh["answer"]


@pytest.mark.parametrize("change", ["document", "window", "group", "template"])
def test_changed_key_parts_miss(tiny_dir, doc, tmp_path, change):
    ask_json(tiny_dir, doc, "Who?", *FIXED)
    args, target = list(FIXED), doc
    if change == "document":
        target = tmp_path / "other.txt"
        target.write_text(CORPUS.replace("green", "blue"))
    elif change == "window":
        args[1] = 10
    elif change == "group":
        args[3] = 20
    else:
        template = tmp_path / "t.txt"
        template.write_text("Read this:\n{document}\n\nQuestion: {question}")
        args += ["--prompt-file", template]
    data, _ = ask_json(tiny_dir, target, "Who?", *args)
    assert data["cache"] == "miss"
    assert len(kv_files()) == 2


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 40, len(data) - 8):  # inside the tensor data, past the JSON header
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", [_truncate, _flip])
def test_damaged_entry_is_reported_once_and_rebuilt(tiny_dir, doc, damage):
    first, _ = ask_json(tiny_dir, doc, "Who?")
    [entry] = kv_files()
    damage(entry)
    second, stderr = ask_json(tiny_dir, doc, "Who?")
    assert second["cache"] == "miss" and second["answer"] == first["answer"]
    warnings = [line for line in stderr.splitlines() if line.startswith("Warning: cached document")]
    assert len(warnings) == 1 and warnings[0].endswith("was corrupt" + warnings[0].split("was corrupt")[1])
    assert "rebuilding" in warnings[0] and "Traceback" not in stderr
    third, stderr = ask_json(tiny_dir, doc, "Who?")
    assert third["cache"] == "hit" and third["answer"] == first["answer"] and "Warning" not in stderr


def test_entry_under_a_wrong_key_is_rejected(tiny_dir, doc, tmp_path):
    ask_json(tiny_dir, doc, "Who?")
    [entry] = kv_files()
    other = tmp_path / "other.txt"
    other.write_text(CORPUS.replace("green", "blue"))
    ask_json(tiny_dir, other, "Who?")
    [a, b] = kv_files()
    os.replace(b if a == entry else a, entry)  # the other document's entry now sits under this key
    data, stderr = ask_json(tiny_dir, doc, "Who?")
    assert data["cache"] == "miss" and "was corrupt" in stderr


# ---------------------------------------------------------------------------------------------------------
# Library level


def _setup(tiny_dir, question="Who counted the ships?", kv_dtype="auto"):
    loaded = load_model(str(tiny_dir), device="cpu", kv_dtype=kv_dtype)
    template = load_template("ask")
    ids = chat_token_ids(loaded.tokenizer, user_message(template, CORPUS, question))
    plan = make_plan(context_window=loaded.context_window, length=len(ids) + 8)
    configure(loaded.model, plan)
    prefix_len, key = prompt_cache_key(loaded, str(tiny_dir), template, CORPUS, ids, plan)
    return loaded, ids, plan, prefix_len, key


def test_document_prefix_ends_with_the_document(tiny_dir):
    loaded, ids, plan, prefix_len, key = _setup(tiny_dir)
    assert plan.needs_extension
    text = loaded.tokenizer.decode(ids[:prefix_len])
    assert CORPUS.rstrip()[:-8] in text and "Who counted" not in text
    assert 0 < prefix_len < len(ids)
    other = chat_token_ids(loaded.tokenizer, user_message(load_template("ask"), CORPUS, "Xyz?"))
    assert other[:prefix_len] == ids[:prefix_len]


@pytest.mark.parametrize("kv_dtype, tolerance", [("float32", 1e-4), ("bfloat16", 1e-2)])
def test_loaded_cache_gives_the_same_logits(tiny_dir, kv_dtype, tolerance):
    """A hit is exact whatever the KV cache's type; against a prefill cut in other chunks, a float32 cache agrees
    to float32 rounding, a bfloat16 one to its kernel's (it rounds the probabilities of each block)."""
    loaded, ids, plan, prefix_len, key = _setup(tiny_dir, kv_dtype=kv_dtype)
    assert loaded.kv_dtype == kv_dtype
    settings = DocCacheSettings()
    results = []
    for expected in ("miss", "hit"):
        session = Session.start(loaded.model)
        logits, status = prefill_cached(
            session, ids, prefix_len=prefix_len, key=key, sources=["doc"], chunk=16, settings=settings
        )
        assert status == expected and session.length == len(ids)
        results.append((logits, session))
    assert torch.equal(results[0][0], results[1][0])
    # The entry keeps the keys SelfExtend re-rotated in place as they were, and says which: the hit is exact.
    rotated = results[0][1].rotated_in_place()
    assert rotated and set(rotated.values()) == {len(ids) - plan.W}
    assert results[1][1].rotated_in_place() == results[0][1].rotated_in_place()
    for a, b in zip(results[0][1].cache.layers, results[1][1].cache.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    fresh = Session.start(loaded.model)
    full = prefill(fresh, torch.tensor([ids]), chunk=16)
    assert results[1][1].cache.layers[0].keys.dtype == getattr(torch, kv_dtype)
    torch.testing.assert_close(results[1][0], full, rtol=tolerance, atol=tolerance)
    # and a decoding step after the loaded prefix agrees too
    nxt = torch.tensor([[int(full.argmax())]])
    torch.testing.assert_close(results[1][1].forward(nxt), fresh.forward(nxt), rtol=tolerance, atol=tolerance)


CONCURRENT = textwrap.dedent("""
    import sys, torch
    from transformers import DynamicCache
    from longlm_cli.doccache import store as doccache
    from pathlib import Path
    directory, key = Path(sys.argv[1]), sys.argv[2]
    torch.manual_seed(0)
    cache = DynamicCache()
    for i in range(2):
        cache.update(torch.randn(1, 2, 3000, 16), torch.randn(1, 2, 3000, 16), i)
    for _ in range(15):
        doccache.save_entry(directory, key, cache, list(range(3000)), ["doc"])
""")


def test_concurrent_writers_leave_one_valid_entry(tmp_path):
    from transformers import DynamicCache

    key = "ab" * 32
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(tmp_path), key]) for _ in range(2)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".secret", f"{key}.safetensors"]
    cache = DynamicCache()
    config = SimpleNamespace(num_hidden_layers=2, num_attention_heads=2, hidden_size=32)
    assert doccache.load_entry(
        tmp_path, key, list(range(3000)), cache, config=config, dtype=torch.float32, device="cpu"
    )
    assert cache.get_seq_length() == 3000


def test_least_recently_used_entries_are_evicted(tmp_path, monkeypatch):
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.update(torch.zeros(1, 1, 100, 16), torch.zeros(1, 1, 100, 16), 0)
    for n, key in enumerate(["a" * 64, "b" * 64, "c" * 64]):
        path = doccache.save_entry(tmp_path, key, cache, list(range(100)), [f"doc{n}"])
        os.utime(path, (1000 + n, 1000 + n))
    doccache.touch(tmp_path / f"{'a' * 64}.safetensors")  # used just now: the most recent
    size = path.stat().st_size
    removed = doccache.prune(tmp_path, max_bytes=2 * size)
    assert [e.key for e in removed] == ["b" * 64]
    monkeypatch.setenv("LONGLM_CACHE_MAX_BYTES", str(size))
    assert doccache.DocCacheSettings().resolved_max_bytes() == size
    assert [e.key for e in doccache.prune(tmp_path)] == ["c" * 64]


def test_bad_size_limit_is_one_error_line(tiny_dir, doc, monkeypatch):
    monkeypatch.setenv("LONGLM_CACHE_MAX_BYTES", "lots")
    result = run("ask", doc, "Who?", "--model", tiny_dir, "--max-new-tokens", 2)
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: LONGLM_CACHE_MAX_BYTES='lots' is not a whole number of bytes"


def test_cache_list_and_clear(tiny_dir, doc, tmp_path):
    empty = run("cache", "list")
    assert empty.exit_code == 0 and empty.stdout == "" and empty.stderr.startswith("0 entries")
    ask_json(tiny_dir, doc, "Who?")
    listed = run("cache", "list")
    [line] = listed.stdout.splitlines()
    [entry] = kv_files()
    assert line.startswith(entry.name[:12]) and line.endswith(str(doc)) and "KiB" in line
    assert listed.stderr.startswith("1 entry, ")
    pruned = run("cache", "prune", "--max-bytes", 0)
    assert pruned.exit_code == 0 and pruned.stdout.startswith("Removed 1 entry")
    ask_json(tiny_dir, doc, "Who?")
    cleared = run("cache", "clear")
    assert cleared.exit_code == 0 and cleared.stdout.startswith("Removed 1 entry (") and kv_files() == []


def test_sliding_window_models_are_not_cached(tmp_path, capsys):
    from helpers import tiny_model

    model = tiny_model("gemma3")
    session = Session.start(model)
    logits, status = prefill_cached(
        session,
        list(range(1, 30)),
        prefix_len=20,
        key="f" * 64,
        sources=["doc"],
        chunk=8,
        settings=DocCacheSettings(directory=tmp_path),
    )
    assert status == "off" and session.length == 29 and list(tmp_path.iterdir()) == []
    assert "Note: document cache off: the model has DynamicSlidingWindowLayer cache layers" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# Entries are untrusted input: every way an entry can fail to fit the model ends in one warning and a rebuild


def _rewrite(entry: Path, change) -> None:
    """Save ``entry`` again through save_entry with its layers [(k, v), ...] changed: the checksum stays valid."""
    from safetensors.torch import load_file
    from transformers import DynamicCache

    tensors = load_file(entry)
    layers = change([(tensors[f"k.{i}"], tensors[f"v.{i}"]) for i in range(len(tensors) // 2)])
    cache = DynamicCache()
    for i, (k, v) in enumerate(layers):
        cache.update(k, v, i)
    doccache.save_entry(entry.parent, entry.name[: -len(".safetensors")], cache, tensors["ids"].tolist(), ["doc"])


def _nan_keys(layers):
    return [(torch.full_like(k, float("nan")) if i == 0 else k, v) for i, (k, v) in enumerate(layers)]


MISFITS = {  # a change to an entry's layers, and the reason the warning gives
    "key head size": (lambda layers: [(k[..., :8], v) for k, v in layers], "its tensor shapes do not match the model"),
    "value head size": (
        lambda layers: [(k, v[..., :8]) for k, v in layers],
        "its tensor shapes do not match the model",
    ),
    "heads": (lambda layers: [(k[:, :1], v[:, :1]) for k, v in layers], "its tensor shapes do not match the model"),
    "fewer layers": (lambda layers: layers[:1], "it holds a different number of layers or other tensors"),
    "extra layer": (lambda layers: layers + layers[:1], "it holds a different number of layers or other tensors"),
    "dtype": (lambda layers: [(k.half(), v.half()) for k, v in layers], "its dtype does not match the model"),
    "nan": (_nan_keys, "it holds NaN or infinite values"),
}


@pytest.fixture(scope="module")
def setup(tiny_dir):
    return _setup(tiny_dir)


def _prefill(setup, directory: Path):
    loaded, ids, plan, prefix_len, key = setup
    session = Session.start(loaded.model)
    settings = DocCacheSettings(directory=directory, min_tokens=0)  # a module fixture: the env is not set yet
    return prefill_cached(session, ids, prefix_len=prefix_len, key=key, sources=["doc"], chunk=16, settings=settings)


@pytest.fixture(scope="module")
def reference(setup, tmp_path_factory):
    """The uncached logits (a miss: no entry yet) and the valid entry that run saved: (logits, name, bytes)."""
    directory = tmp_path_factory.mktemp("reference")
    logits, status = _prefill(setup, directory)
    assert status == "miss"
    [entry] = directory.glob("*.safetensors")
    return logits, entry.name, entry.read_bytes()


def _valid_entry(reference, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    entry = directory / reference[1]
    entry.write_bytes(reference[2])
    return entry


@pytest.mark.parametrize("misfit", list(MISFITS))
def test_entry_not_fitting_the_model_is_reported_once_deleted_and_rebuilt(setup, reference, tmp_path, capsys, misfit):
    change, reason = MISFITS[misfit]
    uncached = reference[0]
    _rewrite(_valid_entry(reference, tmp_path), change)
    capsys.readouterr()
    logits, status = _prefill(setup, tmp_path)
    assert status == "miss" and torch.equal(logits, uncached)
    assert capsys.readouterr().err == f"Warning: cached document {setup[4][:12]} was corrupt ({reason}); rebuilding\n"
    logits, status = _prefill(setup, tmp_path)
    assert status == "hit" and torch.equal(logits, uncached) and capsys.readouterr().err == ""


def test_ask_after_an_entry_of_the_wrong_head_size_gives_the_uncached_answer(tiny_dir, doc):
    uncached, _ = ask_json(tiny_dir, doc, "Who?", "--no-cache")
    ask_json(tiny_dir, doc, "Who?")
    [entry] = kv_files()
    _rewrite(entry, MISFITS["key head size"][0])
    second, stderr = ask_json(tiny_dir, doc, "Who?")
    assert [line for line in stderr.splitlines() if "Warning" in line or "Traceback" in line] == [
        f"Warning: cached document {entry.name[:12]} was corrupt (its tensor shapes do not match the model); rebuilding"
    ]
    assert second["cache"] == "miss" and second["answer"] == uncached["answer"]
    third, stderr = ask_json(tiny_dir, doc, "Who?")
    assert third["cache"] == "hit" and third["answer"] == uncached["answer"] and "Warning" not in stderr


def _names(directory: Path) -> list[str]:
    """What a cache directory holds, but for the lock file of its pruning and clearing and its secret."""
    return sorted(p.name for p in directory.iterdir() if p.name not in (DIRECTORY_LOCK, SECRET_NAME))


def _occupy(entry: Path, kind: str, reference) -> Path | None:
    """Put ``kind`` at ``entry``; return the symlink's target (a valid copy of the entry) if any."""
    if kind == "a symbolic link":
        target = _valid_entry(reference, entry.parent.parent / "elsewhere")
        entry.symlink_to(target)
        return target
    if kind == "a fifo":
        os.mkfifo(entry)
    else:
        entry.mkdir()
    return None


@pytest.mark.parametrize("kind", ["a directory", "a symbolic link", "a fifo"])
def test_non_file_at_the_entry_path_is_removed_and_rebuilt(setup, reference, tmp_path, capsys, kind):
    directory, uncached = tmp_path / "kv", reference[0]
    directory.mkdir()
    entry = directory / reference[1]
    target = _occupy(entry, kind, reference)
    capsys.readouterr()
    logits, status = _prefill(setup, directory)
    assert status == "miss" and torch.equal(logits, uncached)
    expected = f"Warning: cached document {setup[4][:12]} was corrupt (it was {kind}, not a file); rebuilding\n"
    assert capsys.readouterr().err == expected
    assert entry.is_file() and not entry.is_symlink() and _names(directory) == [entry.name]
    if target is not None:  # never followed, never touched
        assert target.read_bytes() == reference[2]
    logits, status = _prefill(setup, directory)
    assert status == "hit" and torch.equal(logits, uncached) and capsys.readouterr().err == ""


def test_full_directory_at_the_entry_path_is_left_alone_and_nothing_is_cached(setup, reference, tmp_path, capsys):
    uncached, entry = reference[0], tmp_path / reference[1]
    entry.mkdir()
    (entry / "mine.txt").write_text("mine")
    capsys.readouterr()
    for _ in range(2):
        logits, status = _prefill(setup, tmp_path)
        assert status == "miss" and torch.equal(logits, uncached)
        expected = f"cached document {setup[4][:12]} is a directory, not a file, and cannot be removed; not caching it"
        assert capsys.readouterr().err == f"Warning: {expected}\n"
    assert _names(tmp_path) == [entry.name] and (entry / "mine.txt").read_text() == "mine"


def _small_cache():
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.update(torch.ones(1, 1, 2, 4), torch.ones(1, 1, 2, 4), 0)
    return cache


def test_non_files_are_not_listed_pruned_or_counted_as_cleared(tmp_path):
    kv = doccache.kv_dir()
    entry = doccache.save_entry(kv, "a" * 64, _small_cache(), [1, 2], ["doc"])
    (kv / f"{'b' * 64}.safetensors").mkdir()
    (kv / f"{'c' * 64}.safetensors").mkdir()
    (kv / f"{'c' * 64}.safetensors" / "mine.txt").write_text("mine")
    os.mkfifo(kv / f"{'d' * 64}.safetensors")
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(entry.read_bytes())
    (kv / f"{'e' * 64}.safetensors").symlink_to(outside)
    size = entry.stat().st_size
    # In a subprocess with a time limit: reading a fifo's header would block for ever.
    listed = subprocess.run(
        [sys.executable, "-m", "longlm_cli.cli", "cache", "list"], capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0 and [line[:12] for line in listed.stdout.splitlines()] == ["a" * 12]
    assert listed.stderr.startswith(f"1 entry, {size} B in ")
    pruned = run("cache", "prune", "--max-bytes", size)
    assert pruned.stdout.startswith("Removed 0 entries (0 B)") and entry.exists()
    cleared = run("cache", "clear")
    assert cleared.exit_code == 0 and cleared.stdout.startswith(f"Removed 1 entry ({size} B)")
    assert _names(kv) == [f"{'c' * 64}.safetensors"] and outside.is_file()
    assert run("cache", "clear").stdout.startswith("Removed 0 entries (0 B)")


def test_cache_list_strips_control_characters_from_entries():
    kv = doccache.kv_dir()
    sources = ["\x1b]0;pwned\x07evil\x1b[2J.txt", "caf\u00e9 \u6587\x9b31m\x7f.txt", "new\nline\ttab\r", "\ud800x"]
    first = doccache.save_entry(kv, "1" * 64, _small_cache(), [1, 2], sources)
    second = doccache.save_entry(kv, "f" * 64, _small_cache(), [1, 2], ["\x1b[0m"])
    doccache.save_entry(kv, "\x1b[31mred" + "f" * 56, _small_cache(), [1, 2], ["x"])  # not a key: not listed
    os.utime(first, (2_000_000_000, 2_000_000_000))
    os.utime(second, (1_000_000_000, 1_000_000_000))
    listed = run("cache", "list")
    assert listed.exit_code == 0, listed.output
    when = [time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) for t in (2_000_000_000, 1_000_000_000)]
    size = [f"{path.stat().st_size} B" for path in (first, second)]
    assert listed.stdout == (
        f"111111111111  {size[0]:>10}  {when[0]}  ]0;pwnedevil[2J.txt, caf\u00e9 \u658731m.txt, newlinetab, \ufffdx\n"
        f"ffffffffffff  {size[1]:>10}  {when[1]}  [0m\n"
    )


def _raw_entry(path: Path, key: str, **metadata) -> None:
    """An entry written by hand: what save_entry writes for [1, 2] and one layer, ``metadata`` overriding."""
    from safetensors.torch import save_file

    tensors = {"ids": torch.tensor([1, 2]), "k.0": torch.ones(1, 1, 2, 4), "v.0": torch.ones(1, 1, 2, 4)}
    base = {"format": doccache.FORMAT, "key": key, "tokens": "2", "layers": "1", "sources": '["doc"]'}
    base["tensor_sha256"] = doccache.tensor_digest(tensors)
    save_file(tensors, path, metadata=signed({**base, **metadata}, cache_secret(path.parent)))  # as longlm signs


def _huge_header(path: Path, key: str) -> None:
    _raw_entry(path, key)
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    padded = size + (5 << 20)  # safetensors allows trailing spaces in its header
    path.write_bytes(padded.to_bytes(8, "little") + data[8 : 8 + size] + b" " * (5 << 20) + data[8 + size :])


MALFORMED = {
    "sources not a list": lambda p, key: _raw_entry(p, key, sources='{"a": 1}', tokens="2x"),
    "sources not strings": lambda p, key: _raw_entry(p, key, sources='["ok", 3]', tokens="\u0662"),
    "sources nested too deep": lambda p, key: _raw_entry(p, key, sources="[" * 100_000, tokens=" 2"),
    "tokens of 5000 digits": lambda p, key: _raw_entry(p, key, sources='"doc"', tokens="9" * 5000),
    "header too large": _huge_header,
}


@pytest.mark.parametrize("malformed", list(MALFORMED))
def test_malformed_metadata_is_listed_safely_and_rebuilt(tmp_path, capsys, malformed):
    from transformers import DynamicCache

    key = "9" * 64
    path = doccache.entry_path(tmp_path, key)
    MALFORMED[malformed](path, key)
    [entry] = doccache.list_entries(tmp_path)
    assert (entry.key, entry.sources, entry.tokens) == (key, (), None)
    config = SimpleNamespace(num_hidden_layers=1, num_attention_heads=1, hidden_size=4)
    cache = DynamicCache()
    assert not doccache.load_entry(tmp_path, key, [1, 2], cache, config=config, dtype=torch.float32, device="cpu")
    [warning] = capsys.readouterr().err.splitlines()
    assert warning.startswith("Warning: cached document 999999999999 was corrupt (") and warning.endswith("rebuilding")
    assert not path.exists() and cache.get_seq_length() == 0


def _crafted_header(path: Path, key: str, change) -> None:
    """A valid entry whose header JSON is then changed by ``change(header)`` (and its size fixed up)."""
    _raw_entry(path, key)
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = change(json.loads(data[8 : 8 + size]))
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + size :])


CRAFTED_HEADERS = {
    "a list": lambda h: [h],
    "a shape that is a string": lambda h: {**h, "k.0": {**h["k.0"], "shape": "1124"}},
    "a negative dimension": lambda h: {**h, "k.0": {**h["k.0"], "shape": [1, 1, -2, -4]}},
    "byte offsets reversed": lambda h: {**h, "v.0": {**h["v.0"], "data_offsets": h["v.0"]["data_offsets"][::-1]}},
    "three byte offsets": lambda h: {**h, "v.0": {**h["v.0"], "data_offsets": [0, 8, 16]}},
    "metadata not strings": lambda h: {**h, "__metadata__": {**h["__metadata__"], "tokens": 2}},
    "an unknown dtype": lambda h: {**h, "v.0": {**h["v.0"], "dtype": "F8_E4M3"}},
}


@pytest.mark.parametrize("crafted", list(CRAFTED_HEADERS))
def test_an_entry_with_a_crafted_tensor_table_is_one_warning_and_rebuilt(tmp_path, capsys, crafted):
    from transformers import DynamicCache

    key = "7" * 64
    path = doccache.entry_path(tmp_path, key)
    _crafted_header(path, key, CRAFTED_HEADERS[crafted])
    config = SimpleNamespace(num_hidden_layers=1, num_attention_heads=1, hidden_size=4)
    cache = DynamicCache()
    assert not doccache.load_entry(tmp_path, key, [1, 2], cache, config=config, dtype=torch.float32, device="cpu")
    assert (
        capsys.readouterr().err
        == "Warning: cached document 777777777777 was corrupt (unreadable (ValueError)); rebuilding\n"
    )
    assert not path.exists() and cache.get_seq_length() == 0


def test_an_unchanged_crafted_header_still_loads(tmp_path, capsys):
    """The rewriting helper itself keeps a valid entry valid: the cases above fail for their change alone."""
    from transformers import DynamicCache

    key = "7" * 64
    _crafted_header(doccache.entry_path(tmp_path, key), key, lambda h: h)
    config = SimpleNamespace(num_hidden_layers=1, num_attention_heads=1, hidden_size=4)
    cache = DynamicCache()
    assert doccache.load_entry(tmp_path, key, [1, 2], cache, config=config, dtype=torch.float32, device="cpu")
    assert capsys.readouterr().err == "" and torch.equal(cache.layers[0].keys, torch.ones(1, 1, 2, 4))


@pytest.mark.parametrize(
    "counts, reason",
    [
        ('{"0": 3}', "its re-rotated key counts are malformed"),  # more keys than the entry's 2 tokens
        ('{"1": 1}', "its re-rotated key counts are malformed"),  # a layer the model does not have
        ('{"0": 1.5}', "its re-rotated key counts are malformed"),
        ('{"0": true}', "its re-rotated key counts are malformed"),
        ("[1]", "its re-rotated key counts are malformed"),
        ("{", "its re-rotated key counts are malformed"),
        ('{"0": 1}', "it holds keys re-rotated in place, which this session does not keep"),
    ],
)
def test_an_entry_with_bad_or_unusable_re_rotated_key_counts_is_rebuilt(tmp_path, capsys, counts, reason):
    from transformers import DynamicCache

    key = "8" * 64
    path = doccache.entry_path(tmp_path, key)
    _raw_entry(path, key, rotated_keys=counts)
    config = SimpleNamespace(num_hidden_layers=1, num_attention_heads=1, hidden_size=4)
    cache = DynamicCache()
    assert not doccache.load_entry(tmp_path, key, [1, 2], cache, config=config, dtype=torch.float32, device="cpu")
    assert capsys.readouterr().err == f"Warning: cached document 888888888888 was corrupt ({reason}); rebuilding\n"
    assert not path.exists() and cache.get_seq_length() == 0


def test_an_entry_with_re_rotated_keys_tells_the_session_which():
    from transformers import DynamicCache

    key = "7" * 64
    directory = doccache.kv_dir()
    path = doccache.save_entry(directory, key, _small_cache(), [1, 2], ["doc"], rotated={0: 1})
    told = []
    config = SimpleNamespace(num_hidden_layers=1, num_attention_heads=1, hidden_size=4)
    cache = DynamicCache()
    assert doccache.load_entry(
        directory, key, [1, 2], cache, config=config, dtype=torch.float32, device="cpu", adopt=told.append
    )
    assert told == [{0: 1}] and cache.get_seq_length() == 2 and path.exists()


def test_expected_tensors_follow_the_model_config():
    from transformers import LlamaConfig

    llama = LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2)
    assert doccache.expected_tensors(llama, 3) == {
        "ids": (3,),
        **{f"{p}.{i}": (1, 2, 3, 16) for i in range(2) for p in "kv"},
    }
    plain = SimpleNamespace(hidden_size=32, num_attention_heads=2, num_hidden_layers=1)  # no kv heads, no head_dim
    assert doccache.expected_tensors(plain, 5) == {"ids": (5,), "k.0": (1, 2, 5, 16), "v.0": (1, 2, 5, 16)}
    latent = SimpleNamespace(
        hidden_size=32, num_attention_heads=2, num_key_value_heads=2, num_hidden_layers=1, qk_head_dim=24, v_head_dim=8
    )
    wrapped = SimpleNamespace(get_text_config=lambda: latent)  # a multimodal model's config
    assert doccache.expected_tensors(wrapped, 1) == {"ids": (1,), "k.0": (1, 2, 1, 24), "v.0": (1, 2, 1, 8)}


def test_ask_summarize_and_chat_share_one_entry_per_document(tiny_dir, tmp_path):
    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)
    # One G for all (on the tiny model's L = 64 the planned G moves with every few tokens of question).
    common = ("--model", tiny_dir, "--max-new-tokens", 4, "--json", "-g", 16)
    asked = json.loads(run("ask", doc, "Who counted the ships?", *common).stdout)
    summary = json.loads(run("summarize", doc, *common).stdout)
    other = json.loads(run("ask", doc, "What did they carry?", *common).stdout)
    turn = json.loads(run("chat", doc, *common, input="Who?\n").stdout)
    assert [r["cache"] for r in (asked, summary, other, turn)] == ["miss", "hit", "hit", "hit"]
    assert len(list_entries(Path(os.environ["LONGLM_CACHE_DIR"]) / "kv")) == 1


def test_documents_below_the_minimum_are_not_cached(tiny_dir, tmp_path, monkeypatch):
    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)
    monkeypatch.delenv("LONGLM_CACHE_MIN_TOKENS")
    assert DocCacheSettings().resolved_min_tokens() == 64
    monkeypatch.setenv("LONGLM_CACHE_MIN_TOKENS", "100000")  # far above the tiny corpus
    args = ("ask", doc, "Who?", "--model", tiny_dir, "--max-new-tokens", 2, "--json")
    assert [json.loads(run(*args).stdout)["cache"] for _ in range(2)] == ["off", "off"]
    monkeypatch.setenv("LONGLM_CACHE_MIN_TOKENS", "ten")
    bad = run(*args)
    assert bad.exit_code == 1 and bad.stderr == "Error: LONGLM_CACHE_MIN_TOKENS='ten' is not a whole number of tokens\n"


def test_entry_that_cannot_be_written_is_one_warning_and_the_answer_stands(tiny_dir, tmp_path, monkeypatch):
    import errno

    from longlm_cli.runtime import entryfile

    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)

    def full(path, tensors, metadata):  # the file-size limit reached part way through the tensors
        Path(path).write_bytes(b"\0" * 64)
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))

    monkeypatch.setattr(entryfile, "write", full)
    result = run("ask", doc, "Who?", "--model", tiny_dir, "--max-new-tokens", 4)
    assert result.exit_code == 0, result.output
    expected, _, _ = reference_answer(tiny_dir, "ask", CORPUS, "Who?", max_new_tokens=4)
    assert result.stdout == expected + "\n"
    [warning] = [line for line in result.stderr.splitlines() if line.startswith("Warning")]
    assert warning.startswith("Warning: could not save the document cache in ") and "File too large" in warning
    kv = Path(os.environ["LONGLM_CACHE_DIR"]) / "kv"
    assert not [p for p in kv.iterdir() if p.suffix == ".safetensors"]  # no entry, no temporary file left


def test_undeterminable_home_is_one_error(tiny_dir, tmp_path, monkeypatch):
    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)
    monkeypatch.delenv("LONGLM_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)

    def no_home(cls):
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", classmethod(no_home))
    message = (
        "Error: cannot tell your home directory ($HOME is not set); set LONGLM_CACHE_DIR to a directory for "
        "longlm's cache\n"
    )
    for args in (("ask", doc, "Who?", "--model", tiny_dir), ("cache", "list")):
        result = run(*args)
        assert (result.exit_code, result.stderr) == (1, message)


def test_entry_larger_than_the_limit_is_not_written_and_evicts_nothing(tiny_dir, doc, tmp_path, monkeypatch):
    other = tmp_path / "other.txt"
    other.write_text(CORPUS + " And then some more words.")
    assert ask_json(tiny_dir, other, "Who?")[0]["cache"] == "miss"
    [kept] = kv_files()
    monkeypatch.setenv("LONGLM_CACHE_MAX_BYTES", "1000")  # the limit is below any one entry
    expected, _, _ = reference_answer(tiny_dir, "ask", CORPUS, "Who?", max_new_tokens=4)
    for _ in range(2):  # not saved, so the second run prefills again and says so again
        result = run("ask", doc, "Who?", "--model", tiny_dir, "--max-new-tokens", 4)
        assert result.exit_code == 0, result.output
        [note] = result.stderr.splitlines()
        assert re.fullmatch(
            r"Note: this document's cache entry would take \d+\.\d KiB, more than the cache limit of 1000 B "
            r"\(\$LONGLM_CACHE_MAX_BYTES\); not saved",
            note,
        )
        assert result.stdout == expected + "\n" and kv_files() == [kept]  # the other entry is still there


def test_an_entry_file_is_plain_safetensors_written_from_views(tmp_path):
    """entryfile writes what safetensors reads: strided views of larger buffers, bf16, int64, empty tensors."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from longlm_cli.runtime import entryfile

    buffer = torch.randn(1, 3, 40, 8)
    tensors = {
        "k.0": buffer[:, :, :25],  # a session's keys: a view with room after it
        "v.0": torch.randn(1, 3, 25, 8).to(torch.bfloat16),
        "ids": torch.arange(25),
        "empty": torch.zeros(1, 3, 0, 8),
    }
    path = tmp_path / "entry.safetensors"
    entryfile.write(path, tensors, {"format": "x", "note": "caf\u00e9"})
    loaded = load_file(path)
    assert set(loaded) == set(tensors)
    assert all(torch.equal(loaded[n], t) and loaded[n].dtype == t.dtype for n, t in tensors.items())
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata() == {"format": "x", "note": "caf\u00e9"}
    assert (8 + int.from_bytes(path.read_bytes()[:8], "little")) % 8 == 0  # the tensor bytes start 8-aligned
    with entryfile.open_tensors(path, 1 << 20) as reader:
        assert sorted(reader) == sorted(tensors) and len(reader) == 4
        assert reader.metadata == {"format": "x", "note": "caf\u00e9"}  # the header, parsed once
        assert reader.shapes == {"k.0": (1, 3, 25, 8), "v.0": (1, 3, 25, 8), "ids": (25,), "empty": (1, 3, 0, 8)}
        assert torch.equal(reader["k.0"], buffer[:, :, :25])
        scratch = torch.zeros(2000)
        keys = reader.read("k.0", scratch)  # into the scratch tensor's memory: no new tensor
        assert torch.equal(keys, buffer[:, :, :25]) and keys.data_ptr() == scratch.data_ptr()
        assert reader.read("k.0", torch.zeros(10)).numel() == 600  # too small a scratch: a new tensor
        with pytest.raises(KeyError):
            reader["k.1"]
    path.write_bytes(path.read_bytes()[:-8])  # the last tensor cut short
    with entryfile.open_tensors(path, 1 << 20) as reader, pytest.raises(ValueError, match="the file ends inside it"):
        reader["v.0"]
    with pytest.raises(ValueError, match="header too large"), entryfile.open_tensors(path, 16):
        pass


def test_the_cache_touches_only_the_names_it_writes(tiny_dir, doc):
    """Files of someone else's in the cache folder (a model's weights, a temporary name longlm does not make)
    are never listed, pruned or cleared; longlm's own entries and stale temporary files are."""
    kv = doccache.kv_dir()
    entry = doccache.save_entry(kv, "a" * 64, _small_cache(), [1, 2], ["doc"])
    foreign = [kv / "model-00001-of-00002.safetensors", kv / ".tmp-weights.safetensors", kv / f"{'a' * 63}.safetensors"]
    for path in foreign:
        path.write_bytes(b"not longlm's")
    stale = kv / f".tmp-{'b' * 16}-x1y2z3_q.safetensors"
    stale.write_bytes(b"partial")
    os.utime(stale, (1_000_000_000, 1_000_000_000))
    assert [e.key for e in list_entries(kv)] == ["a" * 64]
    assert run("cache", "prune", "--max-bytes", 0).exit_code == 0
    assert not entry.exists() and not stale.exists() and all(p.read_bytes() == b"not longlm's" for p in foreign)
    ask_json(tiny_dir, doc, "Who counted the ships?", *FIXED)  # an entry, and the prune after it
    assert run("cache", "clear").exit_code == 0
    assert _names(kv) == sorted(p.name for p in foreign)


def test_a_cache_folder_that_is_a_symbolic_link_is_never_used(tiny_dir, doc, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    weights = models / "model-00001-of-00002.safetensors"
    weights.write_bytes(b"weights")
    (models / f"{'a' * 64}.safetensors").write_bytes(b"looks like an entry")
    kv = doccache.kv_dir()
    kv.parent.mkdir(parents=True, exist_ok=True)
    kv.symlink_to(models, target_is_directory=True)
    before = sorted(p.name for p in models.iterdir())
    data, stderr = ask_json(tiny_dir, doc, "Who counted the ships?", *FIXED)
    assert data["cache"] == "off"
    assert stderr.count(f"Note: document cache off: {kv} is a symbolic link") == 1
    for command in (("cache", "clear"), ("cache", "prune"), ("cache", "list")):
        result = run(*command)
        assert result.exit_code == 1
        assert result.stderr == f"Error: {kv} is a symbolic link; longlm keeps its files only in a real folder there\n"
    assert sorted(p.name for p in models.iterdir()) == before and weights.read_bytes() == b"weights"


def test_an_entry_with_a_valid_checksum_but_not_signed_by_this_cache_is_rebuilt(tmp_path, capsys):
    """A crafted entry (all-zero keys, a checksum that matches them) is refused: the checksum is no signature."""
    from safetensors.torch import save_file
    from transformers import DynamicCache

    from longlm_cli.doccache.mac import MAC_FIELD, SECRET_NAME

    kv = doccache.kv_dir()
    path = doccache.save_entry(kv, "6" * 64, _small_cache(), [1, 2], ["doc"])
    assert (kv / SECRET_NAME).stat().st_mode & 0o777 == 0o600 and kv.stat().st_mode & 0o777 == 0o700
    with doccache.entryfile.open_tensors(path, doccache.MAX_HEADER_BYTES) as entry:
        metadata = dict(entry.metadata)
    tensors = {"ids": torch.tensor([1, 2]), "k.0": torch.zeros(1, 1, 2, 4), "v.0": torch.zeros(1, 1, 2, 4)}
    metadata["tensor_sha256"] = doccache.tensor_digest(tensors)
    for mac in (None, "0" * 64, metadata[MAC_FIELD]):  # none, made up, and the true entry's (for other tensors)
        save_file(
            tensors,
            path,
            metadata={k: v for k, v in metadata.items() if k != MAC_FIELD} | ({MAC_FIELD: mac} if mac else {}),
        )
        config = SimpleNamespace(num_hidden_layers=1, num_attention_heads=1, hidden_size=4)
        cache = DynamicCache()
        assert not doccache.load_entry(kv, "6" * 64, [1, 2], cache, config=config, dtype=torch.float32, device="cpu")
        reason = "it is not signed with this cache's secret"
        assert capsys.readouterr().err == f"Warning: cached document 666666666666 was corrupt ({reason}); rebuilding\n"
        assert not path.exists()


@pytest.mark.parametrize("kind", ["symlink", "fifo", "world-readable", "short"])
def test_a_secret_that_is_not_the_caches_own_is_replaced_and_its_entries_rebuilt(tmp_path, capsys, kind):
    from transformers import DynamicCache

    from longlm_cli.doccache.mac import SECRET_NAME

    kv = doccache.kv_dir()
    doccache.save_entry(kv, "5" * 64, _small_cache(), [1, 2], ["doc"])
    secret = kv / SECRET_NAME
    known = tmp_path / "known"
    known.write_bytes(secret.read_bytes())
    secret.unlink()
    if kind == "symlink":
        secret.symlink_to(known)  # a secret someone else knows
    elif kind == "fifo":
        os.mkfifo(secret)
    else:
        secret.write_bytes(known.read_bytes()[: 16 if kind == "short" else None])
        secret.chmod(0o644 if kind == "world-readable" else 0o600)
    config = SimpleNamespace(num_hidden_layers=1, num_attention_heads=1, hidden_size=4)
    assert not doccache.load_entry(
        kv, "5" * 64, [1, 2], DynamicCache(), config=config, dtype=torch.float32, device="cpu"
    )
    assert "not signed with this cache's secret" in capsys.readouterr().err
    assert secret.is_file() and not secret.is_symlink() and secret.stat().st_mode & 0o777 == 0o600
    assert secret.read_bytes() != known.read_bytes() and len(secret.read_bytes()) == 32
    doccache.save_entry(kv, "5" * 64, _small_cache(), [1, 2], ["doc"])  # rebuilt, and it loads again
    assert doccache.load_entry(kv, "5" * 64, [1, 2], DynamicCache(), config=config, dtype=torch.float32, device="cpu")


def test_a_cache_folder_writable_by_others_is_not_used(tiny_dir, doc):
    kv = doccache.kv_dir()
    kv.mkdir(parents=True)
    kv.chmod(0o777)
    data, stderr = ask_json(tiny_dir, doc, "Who counted the ships?", *FIXED)
    advice = f"{kv} is writable by other users, who could plant files longlm would trust: run chmod go-w {kv}"
    assert data["cache"] == "off" and stderr.count(f"Note: document cache off: {advice}") == 1
    listed = run("cache", "list")
    assert listed.exit_code == 1 and listed.stderr == f"Error: {advice}\n"
    assert sorted(kv.iterdir()) == []
    kv.chmod(0o700)
    assert ask_json(tiny_dir, doc, "Who counted the ships?", *FIXED)[0]["cache"] == "miss"


def test_cache_list_shows_unfinished_saves_and_clear_removes_them():
    kv = doccache.kv_dir()
    doccache.save_entry(kv, "a" * 64, _small_cache(), [1, 2], ["doc"])
    partial = kv / f".tmp-{'a' * 16}-k3j2_x9q.safetensors"  # what a save stopped mid-way leaves
    partial.write_bytes(b"\0" * 2048)
    listed = run("cache", "list")
    assert listed.exit_code == 0 and listed.stderr.splitlines()[-1] == (
        "and 1 unfinished save(s) (2.0 KiB): interrupted, or running now; `longlm cache clear` removes them"
    )
    assert run("cache", "clear").exit_code == 0 and not partial.exists()
    assert "unfinished" not in run("cache", "list").stderr


def test_a_cache_folder_whose_name_is_too_long_is_answered_without_the_cache(tiny_dir, tmp_path, monkeypatch):
    """Its path cannot even be looked at (ENAMETOOLONG): the answer comes, without the cache, not an error."""
    monkeypatch.setenv("LONGLM_CACHE_DIR", str(tmp_path / ("x" * 300)))
    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)
    result = run("ask", doc, "Who?", "--model", tiny_dir, "--max-new-tokens", 2)
    assert result.exit_code == 0, result.output
    assert "Error" not in result.stderr
