"""Attention evidence (engine/evidence.py): the attention a span of query rows gives each key, read from the
running method, against a straightforward reference that writes out every row's softmax over full score
matrices, with queries and keys re-rotated by the model's own RoPE code."""

import json
import os
from pathlib import Path

import pytest
import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

from longlm_cli.answering.pipeline import prefill_cached
from longlm_cli.doccache.store import DocCacheSettings
from longlm_cli.engine.dca import DcaConfig, apply_dca
from longlm_cli.engine.evidence import AttentionTap, tapping
from longlm_cli.engine.selfextend import apply_selfextend
from longlm_cli.runtime.generate import Session, prefill

from helpers import BASE, CORPUS, VOCAB, _rerotate, reference_answer, run, tiny_model

L = BASE["max_position_embeddings"]
N, START = 150, 110  # 110 tokens of "document", then 40 query rows (across DCA's chunk boundary at 120)
W, G = 16, 4
DCA = DcaConfig.for_window(L)  # chunks of 40 tokens
TOL = 1e-4
_REF: dict = {}


def _scores(q, k, scaling, softcap):
    scores = q @ k.transpose(-1, -2) * scaling
    return softcap * torch.tanh(scores / softcap) if softcap else scores


def _reference_attention(module, query, key, value, mask, scaling=None, softcap=None, sliding_window=None, **kw):
    """Every row's probabilities, recorded per layer; the output is their weighted values."""
    model, method = _REF["model"], _REF["method"]
    Q, K, rep = query.shape[2], key.shape[2], query.shape[1] // key.shape[1]
    k, v, q = key.repeat_interleave(rep, 1).float(), value.repeat_interleave(rep, 1).float(), query.float()
    kpos = torch.arange(K)
    qpos = kpos[K - Q :]
    i, j = qpos[:, None], kpos[None, :]
    scores = _scores(q, k, scaling, softcap)
    keep = j <= i
    if sliding_window:
        keep &= i - j < sliding_window
    elif method == "selfextend":
        qg = _rerotate(model, module, q, qpos, qpos // G + W - W // G)
        kg = _rerotate(model, module, k, kpos, kpos // G)
        scores = torch.where(i - j < W, scores, _scores(qg, kg, scaling, softcap))
    elif method == "dca":
        S, c = DCA.chunk_size, DCA.chunk_len
        kc = _rerotate(model, module, k, kpos, kpos % c)
        succ = _scores(_rerotate(model, module, q, qpos, torch.clamp(qpos % c + c, max=S)), kc, scaling, softcap)
        fixed = torch.full_like(qpos, min(2 * c - 1, S))
        inter = _scores(_rerotate(model, module, q, qpos, fixed), kc, scaling, softcap)
        same, previous = i // c == j // c, i // c == j // c + 1
        scores = torch.where(same, scores, torch.where(previous, succ, inter))  # same chunk: true distances
    probs = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1)
    _REF["probs"][module.layer_idx] = probs[0]
    return (probs @ v).transpose(1, 2).to(query.dtype), None


AttentionInterface.register("longlm_evidence_reference", _reference_attention)
AttentionMaskInterface.register("longlm_evidence_reference", lambda *a, **k: None)


def _expected(model, ids, method: str) -> dict[int, torch.Tensor]:
    """Per layer, [H, N]: the attention each key receives from rows START..N, summed."""
    original = model.config._attn_implementation
    _REF.update(model=model, method=method, probs={})
    model.set_attn_implementation("longlm_evidence_reference")
    try:
        with torch.no_grad():
            model(ids)
    finally:
        model.set_attn_implementation(original)
    return {layer: probs[:, START:].sum(dim=1) for layer, probs in _REF["probs"].items()}


def _apply(model, method: str):
    if method == "selfextend":
        apply_selfextend(model, group_size=G, window=W)
    elif method == "dca":
        apply_dca(model, chunk_size=DCA.chunk_size, local_window=DCA.local_window)
    return model


def _tapped(model, ids, mode: str, directory=None) -> dict[int, torch.Tensor]:
    tap = AttentionTap(start=START, stop=N)
    if mode == "full":
        with tapping(model, tap), torch.no_grad():
            model(ids)
        return tap.received
    session = Session.start(model, reserve=N)
    if mode == "chunked":
        with tapping(model, tap):
            prefill(session, ids, chunk=7)
    elif mode == "cached":  # the document first, untapped; then the query rows over its KV cache
        prefill(session, ids[:, :START], chunk=32)
        with tapping(model, tap):
            prefill(session, ids[:, START:], chunk=9)
    else:  # "stored": the document's KV cache saved by one session, loaded by another (keys re-rotated in place)
        settings = DocCacheSettings(directory=directory, min_tokens=0)
        arguments = dict(prefix_len=START, key="a" * 64, sources=(), chunk=32, settings=settings)
        assert prefill_cached(session, ids[0].tolist(), **arguments)[1] == "miss"
        session = Session.start(model, reserve=N)
        with tapping(model, tap):
            assert prefill_cached(session, ids[0].tolist(), **arguments)[1] == "hit"
        assert session.rotated_in_place() or model.config._attn_implementation == "sdpa"
    return tap.received


def _ids(seed=1):
    return torch.randint(0, VOCAB, (1, N), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode", ["full", "chunked", "cached", "stored"])
@pytest.mark.parametrize("method", ["selfextend", "dca", "plain"])
@pytest.mark.parametrize("arch", ["llama", "llama-gqa4", "gemma2"])
def test_tap_matches_reference(arch, method, mode, tmp_path):
    if arch == "gemma2" and mode == "stored":
        pytest.skip("the document cache does not keep sliding-window layers (gemma2): nothing to load")
    model = tiny_model(arch)
    ids = _ids()
    expected = _expected(model, ids, method)
    got = _tapped(_apply(model, method), ids, mode, tmp_path)
    assert sorted(got) == sorted(expected)
    for layer, mass in got.items():
        assert mass.shape == expected[layer].shape
        assert (mass - expected[layer]).abs().max().item() <= TOL, (layer, mode)


def test_tap_reads_only_the_layers_asked_and_leaves_the_attention_as_it_was():
    model = _apply(tiny_model("llama"), "selfextend")
    ids = _ids()
    with torch.no_grad():
        plain_logits = model(ids).logits
    tap = AttentionTap(start=START, stop=N, layers=frozenset({1}))
    with tapping(model, tap), torch.no_grad():
        tapped_logits = model(ids).logits
    assert sorted(tap.received) == [1]
    assert torch.equal(plain_logits, tapped_logits)
    assert model.config._attn_implementation == "longlm_selfextend"
    rows = N - START
    assert torch.allclose(tap.received[1].sum(dim=1), torch.full((BASE["num_attention_heads"],), float(rows)))


def test_tap_in_bfloat16_follows_float32():
    ids = _ids()
    wide = _tapped(_apply(tiny_model("llama"), "selfextend"), ids, "cached")
    narrow = _tapped(_apply(tiny_model("llama").to(torch.bfloat16), "selfextend"), ids, "cached")
    for layer, mass in wide.items():
        share = mass / mass.sum(dim=1, keepdim=True)
        assert (narrow[layer] / narrow[layer].sum(dim=1, keepdim=True) - share).abs().max().item() < 0.02


# ---------------------------------------------------------------------------------------------------------
# ask --evidence, end to end on the tiny model


def _ledger(tmp_path):
    doc = tmp_path / "ledger.txt"
    doc.write_text(CORPUS * 2 + "The ledger itself was bound in red leather. " + CORPUS)
    return doc


def test_ask_with_evidence_answers_from_the_passages_as_ask_would_from_them(tiny_dir, tmp_path):
    doc = _ledger(tmp_path)
    question = "What was the ledger bound in?"
    result = run("ask", doc, question, "-m", tiny_dir, "--max-new-tokens", 6, "--evidence", 2, "--json")
    assert result.exit_code == 0, result.output
    assert "Note: measuring which attention heads find facts in this model" in result.stderr
    record = json.loads(result.stdout)
    passages = [e["text"] for e in record["evidence"]]
    assert len(passages) == 2 and all(p in doc.read_text() for p in passages)
    starts = [doc.read_text().index(p) for p in passages]
    assert starts == sorted(starts)  # in document order
    assert sorted(e["rank"] for e in record["evidence"]) == [1, 2]
    expected, _, _ = reference_answer(tiny_dir, "ask", "\n\n".join(passages), question, max_new_tokens=6)
    assert record["answer"] == expected
    assert record["plan"]["needs_extension"] and record["timings"]["evidence"] > 0
    stored = json.loads((Path(os.environ["LONGLM_CACHE_DIR"]) / "heads.json").read_text())
    assert len(stored) == 1 and len(next(iter(stored.values()))["heads"]) == 2 * BASE["num_attention_heads"]


def test_the_measured_heads_are_kept_and_verbose_shows_the_passages(tiny_dir, tmp_path):
    doc = _ledger(tmp_path)
    first = run("ask", doc, "Who counted?", "-m", tiny_dir, "--max-new-tokens", 2, "--evidence", 1)
    assert first.exit_code == 0 and "Note: measuring" in first.stderr, first.output
    again = run("ask", doc, "Who counted?", "-m", tiny_dir, "--max-new-tokens", 2, "--evidence", 1, "-v")
    assert again.exit_code == 0, again.output
    assert "Note: measuring" not in again.stderr
    shown = [line for line in again.stderr.splitlines() if line.startswith("  [rank ")]
    assert again.stderr.count("Evidence: 1 passage;") == 1 and len(shown) == 1
    assert shown[0].split("] ", 1)[1] in " ".join(doc.read_text().split())


def test_evidence_auto_reads_passages_beyond_the_window_once_the_heads_are_known(tiny_dir, tmp_path):
    doc, question = _ledger(tmp_path), "What was the ledger bound in?"
    ask = ("ask", doc, question, "-m", tiny_dir, "--max-new-tokens", 4, "--json")
    unknown = run(*ask)  # the tiny model's heads are not known yet: the whole document, nothing measured
    assert unknown.exit_code == 0 and "measuring" not in unknown.stderr, unknown.output
    assert json.loads(unknown.stdout)["evidence"] is None
    assert run(*ask, "--evidence", 1).exit_code == 0  # measures the heads and keeps them
    auto = run(*ask[:-1], "-v")
    assert auto.exit_code == 0, auto.output
    assert "Evidence: 5 passages (--evidence auto: the document exceeds the model's window;" in auto.stderr
    record = json.loads(run(*ask).stdout)
    assert len(record["evidence"]) == 5 and record["plan"]["needs_extension"]
    assert json.loads(run(*ask, "--evidence", 0).stdout)["evidence"] is None


def test_evidence_auto_applies_beyond_the_window_only_and_never_measures():
    from types import SimpleNamespace

    from longlm_cli.answering.evidence import EvidenceSettings
    from longlm_cli.evaluation.heads import evidence_for

    config = SimpleNamespace(num_hidden_layers=30, num_attention_heads=9)
    auto, fixed = EvidenceSettings(passages=5, auto=True), EvidenceSettings(passages=2)

    def prepared(model: str, beyond: bool):
        loaded = SimpleNamespace(model=SimpleNamespace(config=config))
        return SimpleNamespace(plan=SimpleNamespace(needs_extension=beyond), loaded=loaded, requested_model=model)

    assert evidence_for(prepared("default", True), auto) == EvidenceSettings(passages=5)  # the shipped heads
    assert evidence_for(prepared("default", False), auto).passages == 0  # inside the window: the whole document
    assert evidence_for(prepared("someone/unmeasured-model", True), auto).passages == 0  # heads unknown: not measured
    assert evidence_for(prepared("someone/unmeasured-model", False), fixed) == fixed  # a number asked is kept


def test_a_bad_evidence_count_is_a_usage_error(tiny_dir, tmp_path):
    result = run("ask", _ledger(tmp_path), "Who?", "-m", tiny_dir, "--evidence", "many")
    assert result.exit_code == 2
    assert "Invalid value for '--evidence': 'many' is neither a number of passages (0 or more) nor 'auto'" in (
        result.stderr
    )


def test_the_embedded_model_s_heads_ship_and_a_measured_entry_wins(monkeypatch):
    from types import SimpleNamespace

    from longlm_cli.answering import headstore
    from longlm_cli.evaluation import heads
    from longlm_cli.planning.tuned import model_key

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured")

    monkeypatch.setattr(heads, "measure_heads", no_measuring)
    config = SimpleNamespace(num_hidden_layers=30, num_attention_heads=9)  # SmolLM2-135M's shape
    loaded = SimpleNamespace(model=SimpleNamespace(config=config), context_window=8192)
    assert heads.heads_for(loaded, "default") == list(headstore.EMBEDDED_HEADS.heads)
    measured = Path(__file__).parent.parent / "benchmarks/results/evidence/heads-default.json"
    assert [tuple(h) for h in json.loads(measured.read_text())["best"]] == list(headstore.EMBEDDED_HEADS.heads)
    key = model_key("default")
    headstore.save_heads(headstore.StoredHeads(model=key, length=512, samples=1, heads=((1, 2),)))
    assert heads.heads_for(loaded, "default") == [(1, 2)]  # the user's own measurement first


def test_measured_heads_rank_passages_by_the_attention_they_receive(tiny_dir):
    from longlm_cli.answering.pipeline import ModelSettings
    from longlm_cli.evaluation.heads import measure_heads

    loaded = ModelSettings(model=str(tiny_dir), dtype="float32").load()
    scores = measure_heads(loaded, length=512, samples=2)
    flat = [s for row in scores.scores for s in row]
    assert len(scores.scores) == BASE["num_hidden_layers"] and len(flat) == 2 * BASE["num_attention_heads"]
    assert all(0.0 <= s <= 1.0 for s in flat) and max(flat) > 0
    best = scores.best(3)
    assert [scores.scores[layer][head] for layer, head in best] == sorted(flat, reverse=True)[:3]


def test_chat_with_evidence_answers_each_question_from_its_own_passages(tiny_dir, tmp_path):
    doc = _ledger(tmp_path)
    questions = ["What was the ledger bound in?", "Who counted the ships?"]
    result = run(
        "chat", doc, "-m", tiny_dir, "--max-new-tokens", 5, "--evidence", 2, "--json", input="\n".join(questions)
    )
    assert result.exit_code == 0, result.output
    turns = [json.loads(line) for line in result.stdout.splitlines()]
    assert [t["turn"] for t in turns] == [1, 2] and [t["cache"] for t in turns] == ["miss", "conversation"]
    for turn, question in zip(turns, questions):
        passages = [e["text"] for e in turn["evidence"]]
        assert len(passages) == 2
        expected, _, _ = reference_answer(tiny_dir, "ask", "\n\n".join(passages), question, max_new_tokens=5)
        assert turn["answer"] == expected
