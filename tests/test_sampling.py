"""Sampling (transformers' logits processors), incremental detokenization and stop strings, against plain loops."""

import random

import pytest
import torch

from longlm_cli.errors import InputError
from longlm_cli.runtime.generate import Session, decode, prefill
from longlm_cli.runtime.sampling import SamplingSettings, TextStream

from helpers import CORPUS, VOCAB, corpus_tokenizer, run, tiny_model


@pytest.fixture(scope="module")
def tokenizer():
    return corpus_tokenizer()


def _stream_all(tokenizer, ids, stop=()):
    stream = TextStream(tokenizer, stop)
    pieces = [stream.push(t) for t in ids]
    return pieces, stream


def test_streamed_pieces_add_up_to_the_full_decode(tokenizer):
    rng = random.Random(0)
    for _ in range(50):
        ids = [rng.randrange(len(tokenizer)) for _ in range(rng.randrange(1, 40))]
        pieces, stream = _stream_all(tokenizer, ids)
        assert "".join(pieces) + stream.finish() == tokenizer.decode(ids, skip_special_tokens=True)


def test_each_step_decodes_only_a_few_tokens(tokenizer, monkeypatch):
    ids = tokenizer(CORPUS * 3, add_special_tokens=False)["input_ids"]
    lengths = []
    real = tokenizer.decode
    monkeypatch.setattr(tokenizer, "decode", lambda x, **k: lengths.append(len(x)) or real(x, **k))
    _stream_all(tokenizer, ids)
    assert len(ids) > 100 and max(lengths) <= 8  # not the whole answer again at every token


def test_stop_string_cuts_the_answer_and_is_never_shown(tokenizer):
    text = "The keeper counted the ships. Salt and wool came in."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces, stream = _stream_all(tokenizer, ids, stop=("Salt and",))
    assert stream.stopped
    shown = "".join(pieces) + stream.finish()
    assert shown == stream.text == text[: text.index("Salt and")]
    assert not any("Salt" in p or p.endswith("S") for p in pieces)  # the stop string's start was held back


def test_held_back_text_is_released_when_it_is_no_stop(tokenizer):
    text = "Salt is counted. Salt and wool."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces, stream = _stream_all(tokenizer, ids, stop=("Salt and wool!",))
    assert not stream.stopped
    assert "".join(pieces) + stream.finish() == text


def _reference_decode(model, prompt, steps, rewrite):
    """Greedy decoding that runs the whole sequence at every step; ``rewrite(scores, answer)`` adjusts scores."""
    answer = []
    for _ in range(steps):
        with torch.no_grad():
            logits = model(torch.tensor([prompt + answer])).logits[0, -1].float()
        answer.append(int(rewrite(logits, answer).argmax()))
    return answer


def _decode(model, prompt, settings):
    class Ids:  # a tokenizer that shows the token ids (decoding text is not what is tested here)
        eos_token_id = None

        def decode(self, ids, skip_special_tokens=True):
            return "".join(f"<{i}>" for i in ids)

    session = Session.start(model)
    logits = prefill(session, torch.tensor([prompt]))
    return decode(session, Ids(), logits, settings=settings)


def test_repetition_penalty_matches_a_plain_loop():
    model = tiny_model("llama")
    model.generation_config.eos_token_id = None
    prompt = [random.Random(1).randrange(VOCAB) for _ in range(20)]

    def penalise(scores, answer):
        for t in set(answer):
            scores[t] = scores[t] / 1.5 if scores[t] > 0 else scores[t] * 1.5
        return scores

    expected = _reference_decode(model, prompt, 12, penalise)
    decoded = _decode(model, prompt, SamplingSettings(max_new_tokens=12, repetition_penalty=1.5))
    assert list(decoded.token_ids) == expected
    assert expected != _reference_decode(model, prompt, 12, lambda s, a: s)  # the penalty changed something
    assert decoded.finish_reason == "length"


def test_no_repeat_ngram_never_repeats_a_token_with_n_1():
    model = tiny_model("llama")
    model.generation_config.eos_token_id = None
    prompt = [random.Random(2).randrange(VOCAB) for _ in range(20)]

    def forbid(scores, answer):
        scores[list(set(answer))] = float("-inf")
        return scores

    decoded = _decode(model, prompt, SamplingSettings(max_new_tokens=30, no_repeat_ngram_size=1))
    assert list(decoded.token_ids) == _reference_decode(model, prompt, 30, forbid)
    assert len(set(decoded.token_ids)) == 30


def test_top_k_1_samples_the_greedy_answer():
    model = tiny_model("llama")
    model.generation_config.eos_token_id = None
    prompt = list(range(10))
    greedy = _decode(model, prompt, SamplingSettings(max_new_tokens=8))
    sampled = _decode(model, prompt, SamplingSettings(max_new_tokens=8, temperature=5.0, top_k=1, seed=3))
    assert sampled.token_ids == greedy.token_ids


@pytest.mark.parametrize(
    "kwargs", [dict(top_p=0.0), dict(top_p=1.5), dict(repetition_penalty=0.0), dict(top_k=-1), dict(stop=("",))]
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(InputError):
        SamplingSettings(**kwargs)


def test_stop_option_through_ask(tiny_dir, tmp_path):
    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)
    common = ("ask", doc, "Who counted the ships?", "--model", tiny_dir, "--max-new-tokens", 12)
    full = run(*common).stdout.rstrip("\n")
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert len(full) > 6 and stop.strip()
    cut = run(*common, "--stop", stop)
    assert cut.exit_code == 0, cut.output
    assert cut.stdout == full[: full.index(stop)] + "\n"
    assert "Warning" not in cut.stderr
    # A stop string that comes first leaves nothing: the answer is empty, and one line says why.
    nothing = run(*common, "--stop", full[:3])
    assert nothing.exit_code == 0 and nothing.stdout == "\n", nothing.output
    assert nothing.stderr.splitlines()[-1] == "Warning: the answer is empty: a --stop string came first"


def test_an_empty_answer_says_why():
    from longlm_cli.answering.answer import Answer

    def answer(text, reason):
        return Answer(
            task="summarize",
            question=None,
            text=text,
            finish_reason=reason,
            model="m",
            plan=None,
            extended=True,
            extension="selfextend",
            prompt_tokens=1,
            new_tokens=1,
            sources=("d",),
        )

    assert answer("A summary.", "eos").empty_warning is None
    assert answer(" \n", "eos").empty_warning == "the answer is empty: the model ended its turn before writing anything"
    assert answer("", "length").empty_warning == "the answer is empty: only whitespace was written"


@pytest.mark.parametrize(
    "option, value", [("--top-p", "0"), ("--seed", str(2**70)), ("--repetition-penalty", "nan"), ("--top-k", "-1")]
)
def test_bad_sampling_options_are_usage_errors(tiny_dir, tmp_path, option, value):
    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)
    result = run("ask", doc, "Who?", "--model", tiny_dir, option, value)
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.stderr
    assert "Traceback" not in result.output


def test_the_task_sets_the_repetition_settings_only_where_none_was_given():
    def settings(task, **given):
        chosen = SamplingSettings(**given).for_task(task)
        return chosen.repetition_penalty, chosen.no_repeat_ngram_size

    assert settings("summarize") == (1.0, 4)
    assert settings("ask") == (1.0, 0)
    assert settings("summarize", no_repeat_ngram_size=0) == (1.0, 0)
    assert settings("summarize", repetition_penalty=1.2) == (1.2, 4)
    assert settings("ask", no_repeat_ngram_size=3) == (1.0, 3)
