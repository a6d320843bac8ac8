"""The persistent document cache: hits give the same answer and logits, misses on every key part, corruption."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from longlm_cli import doccache
from longlm_cli.doccache import DocCacheSettings
from longlm_cli.pipeline import configure, prefill_cached, prompt_cache_key
from longlm_cli.planning import make_plan
from longlm_cli.runtime.generate import Session, prefill
from longlm_cli.runtime.models import load_model
from longlm_cli.templates import chat_token_ids, load_template, user_message

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
    assert first["text"] == second["text"] == off["text"]
    expected, _, _ = reference_answer(tiny_dir, "ask", CORPUS, "What colour is the ledger?", max_new_tokens=8)
    assert second["text"] == expected
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
    assert data["cache"] == "hit" and data["text"] == fresh["text"]


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
    assert second["cache"] == "miss" and second["text"] == first["text"]
    warnings = [line for line in stderr.splitlines() if line.startswith("Warning: cached document")]
    assert len(warnings) == 1 and warnings[0].endswith("was corrupt" + warnings[0].split("was corrupt")[1])
    assert "rebuilding" in warnings[0] and "Traceback" not in stderr
    third, stderr = ask_json(tiny_dir, doc, "Who?")
    assert third["cache"] == "hit" and third["text"] == first["text"] and "Warning" not in stderr


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


def _setup(tiny_dir, question="Who counted the ships?"):
    loaded = load_model(str(tiny_dir), device="cpu")
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


def test_loaded_cache_gives_the_same_logits(tiny_dir):
    loaded, ids, plan, prefix_len, key = _setup(tiny_dir)
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
    for a, b in zip(results[0][1].cache.layers, results[1][1].cache.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    fresh = Session.start(loaded.model)
    full = prefill(fresh, torch.tensor([ids]), chunk=16)
    torch.testing.assert_close(results[1][0], full, rtol=1e-4, atol=1e-4)
    # and a decoding step after the loaded prefix agrees too
    nxt = torch.tensor([[int(full.argmax())]])
    torch.testing.assert_close(results[1][1].forward(nxt), fresh.forward(nxt), rtol=1e-4, atol=1e-4)


CONCURRENT = textwrap.dedent("""
    import sys, torch
    from transformers import DynamicCache
    from longlm_cli import doccache
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
    assert [p.name for p in tmp_path.iterdir()] == [f"{key}.safetensors"]
    cache = DynamicCache()
    assert doccache.load_entry(tmp_path, key, list(range(3000)), cache, dtype=torch.float32, device="cpu")
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
