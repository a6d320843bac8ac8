"""longlm passkey: prompt builders, scoring, tables, resume and the RoPE-scaling methods, on a tiny random model."""

import json

import pytest
import torch
from click.testing import CliRunner

from longlm_cli.cli import cli
from longlm_cli.engine import scaling
from longlm_cli.errors import InputError, LongLMError
from longlm_cli.evaluation import fact as fact_task
from longlm_cli.evaluation import needle, options, passkey, tables
from longlm_cli.evaluation import results as results_file
from longlm_cli.evaluation.passkey import FILLER, KEY_LINE, QUESTION, TASK, found_key
from longlm_cli.planning.plan import make_plan
from longlm_cli.runtime import generate

from helpers import save_tiny_llama, tiny_model, train_tokenizer

L = 64  # the tiny model's pretraining window
HAYSTACK = fact_task.SAMPLE_HAYSTACK.read_text(encoding="utf-8")
SHORT_SENTENCES = " ".join(f"Ship {i} sailed at dawn." for i in range(400))


@pytest.fixture(scope="module")
def tokenizer():
    corpus = [
        TASK,
        FILLER,
        KEY_LINE,
        QUESTION,
        fact_task.FACT_INTRO,
        fact_task.FACT_LINE,
        fact_task.FACT_QUESTION,
        " ".join(fact_task.FACT_ANSWERS),
        SHORT_SENTENCES,
        HAYSTACK[:20000],
    ]
    return train_tokenizer(corpus, vocab_size=1000, special_tokens=["<|end|>"])


@pytest.fixture(scope="module")
def count(tokenizer):
    return lambda text: len(tokenizer(text)["input_ids"])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-eval-llama"), tokenizer, window=L)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# ---------------------------------------------------------------------------------------------------------
# Option values


def test_parse_lengths_depths_methods():
    assert options.parse_lengths("4k, 8k,16k,100") == [4096, 8192, 16384, 100]
    assert options.parse_lengths("1.5k") == [1536]
    assert options.parse_depths("0,0.25,1") == [0.0, 0.25, 1.0]
    assert options.parse_methods("all") == ["none", "selfextend", "yarn", "dynamic"]
    assert options.parse_methods("selfextend,none") == ["selfextend", "none"]
    for bad in (
        lambda: options.parse_lengths("4x"),
        lambda: options.parse_depths("1.5"),
        lambda: options.parse_methods("rope"),
    ):
        with pytest.raises(LongLMError):
            bad()


# ---------------------------------------------------------------------------------------------------------
# Prompts


@pytest.mark.parametrize("length", [128, 160, 400, 1000, 3000])
@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_passkey_prompt_length_and_depth(count, length, depth):
    prompt = passkey.passkey_prompt(count, length, depth=depth, key="48213")
    assert abs(count(prompt.text) - length) <= 4
    key_line = KEY_LINE.format(key="48213")
    assert prompt.text.startswith(TASK + " ") and prompt.text.endswith(" " + QUESTION)
    assert prompt.text.count(key_line) == 1
    before, after = prompt.text[len(TASK) : -len(QUESTION)].split(key_line)
    n_before = sum(before.count(s) for s in passkey.FILLER_SENTENCES)
    n_after = sum(after.count(s) for s in passkey.FILLER_SENTENCES)
    total = n_before + n_after
    assert total > 0
    assert abs(n_before / total - depth) <= 1 / total + 1e-9  # within one filler sentence of the depth
    assert prompt.position == pytest.approx(n_before / total)
    # Characters: the key line sits at the same fraction of the filler text.
    assert abs(len(before) / (len(before) + len(after)) - depth) <= 30 / (len(before) + len(after)) + 0.02


def test_passkey_prompt_whole_lines_are_the_papers_text(count):
    prompt = passkey.passkey_prompt(count, 400, depth=0.5, key="1")
    assert (" ".join(passkey.FILLER_SENTENCES)) == FILLER
    assert FILLER + " " + FILLER in prompt.text


def _fact_parts(prompt, answer):
    fact = fact_task.FACT_LINE.format(answer=answer)
    head = fact_task.FACT_INTRO + "\n\n"
    tail = "\n\n" + fact_task.FACT_QUESTION
    assert prompt.text.startswith(head) and prompt.text.endswith(tail)
    body = prompt.text[len(head) : -len(tail)]
    assert body.count(fact) == 1
    before, after = body.split(fact)
    return before.strip(), after.strip()


@pytest.mark.parametrize("length", [128, 160, 400, 1000])
@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_fact_prompt_length_and_depth(count, length, depth):
    prompt = fact_task.fact_prompt(count, length, depth=depth, answer="saffron", haystack=SHORT_SENTENCES)
    assert abs(count(prompt.text) - length) <= 4
    before, after = _fact_parts(prompt, "saffron")
    assert "  " not in prompt.text
    used = len(before) + len(after)
    # The fact goes in at a sentence boundary: within one sentence (about 25 characters) of the depth.
    assert abs(len(before) / used - depth) <= 26 / used
    assert prompt.position == pytest.approx(len(before) / used, abs=3 / used)
    assert prompt.expected == "saffron"


@pytest.mark.parametrize("length", [1000, 4000])
@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_fact_prompt_in_the_shipped_novel(count, length, depth):
    prompt = fact_task.fact_prompt(count, length, depth=depth, answer="nutmeg", haystack=HAYSTACK)
    assert abs(count(prompt.text) - length) <= 4
    before, after = _fact_parts(prompt, "nutmeg")
    assert HAYSTACK.startswith(before)  # real prose, in order, with nothing repeated
    assert abs(len(before) / (len(before) + len(after)) - depth) <= 0.1


def test_shipped_text_is_long_enough_for_32k_prompts():
    assert len(HAYSTACK.encode()) > 600_000 and "Gutenberg" not in HAYSTACK
    assert (fact_task.SAMPLE_HAYSTACK.parent / "pride-and-prejudice.LICENSE.txt").is_file()


@pytest.mark.parametrize(
    "build",
    [
        lambda count: passkey.passkey_prompt(count, 20, depth=0.5, key="1"),
        lambda count: fact_task.fact_prompt(count, 20, depth=0.5, answer="sage", haystack=HAYSTACK),
    ],
)
def test_length_below_the_fixed_part_is_refused(count, build):
    with pytest.raises(LongLMError, match="a 20-token prompt is too short"):
        build(count)


def test_short_haystack_is_refused(count):
    with pytest.raises(LongLMError, match="too short"):
        fact_task.fact_prompt(count, 500, depth=0.5, answer="sage", haystack="A short text. Only two sentences.")


# ---------------------------------------------------------------------------------------------------------
# Scoring


@pytest.mark.parametrize(
    "answer, key, hit",
    [
        (" 48213. Remember it.", "48213", True),
        ("48213", "48213", True),
        (" 4821", "48213", False),
        (" 482134", "48213", False),
        (" the key 11111 then 48213", "48213", False),
        (" no digits", "48213", False),
    ],
)
def test_found_key(answer, key, hit):
    assert found_key(answer, key) is hit


@pytest.mark.parametrize(
    "answer, hit",
    [
        (" cardamom.", True),
        ("Cardamom", True),
        (" the cardamom, of course", True),
        (" CARDAMOM! And sugar.", True),
        (" cardamoms.", False),
        (" I think cardamom.", False),
        (" saffron, not cardamom", False),
        ("", False),
    ],
)
def test_fact_match(answer, hit):
    assert fact_task.fact_match(answer, "cardamom") is hit
    assert needle.score("fact", answer, "cardamom") is hit


def test_fact_match_phrases():
    assert fact_task.fact_match(" Black pepper, ground fine.", "black pepper")
    assert not fact_task.fact_match(" black tea", "black pepper")
    assert fact_task.fact_match(" the baker's wife", "baker\u2019s wife")


# ---------------------------------------------------------------------------------------------------------
# Tables


def _record(method, length, depth, correct, **extra):
    return {
        "method": method,
        "length": length,
        "depth": depth,
        "correct": correct,
        "W": None,
        "G": None,
        "factor": None,
        "extended": method != "none" and length > 64,
        **extra,
    }


def test_table_text():
    records = [
        _record("none", 48, 0.0, True),
        _record("none", 48, 1.0, True),
        _record("none", 96, 0.0, False),
        _record("none", 96, 1.0, True),
        _record("selfextend", 48, 0.0, True),
        _record("selfextend", 48, 1.0, False),
        _record("selfextend", 96, 0.0, True, W=8, G=4),
        _record("selfextend", 96, 1.0, True, W=8, G=4),
        _record("selfextend", 96, 1.0, False, W=8, G=4, trial=1),
        _record("yarn", 96, 0.0, False, factor=1.6562),
    ]
    text = tables.format_tables(
        records,
        L=64,
        lengths=[48, 96],
        depths=[0.0, 1.0],
        methods=["none", "selfextend", "yarn"],
        task="passkey",
        model="tiny",
    )
    assert text == (
        "passkey retrieval on tiny, L=64; cells are correct/cases\n"
        "\n"
        "none: plain model\n"
        "length  d=0  d=1   all\n"
        "    48  1/1  1/1  100%\n"
        "    96  0/1  1/1   50%\n"
        "\n"
        "selfextend: SelfExtend\n"
        "length  W  G  d=0  d=1  all\n"
        "    48  -  -  1/1  0/1  50%\n"
        "    96  8  4  1/1  1/2  67%\n"
        "  (length 48 fits in L: run as the plain model)\n"
        "\n"
        "yarn: YaRN (transformers rope_type yarn)\n"
        "length  factor  d=0  d=1  all\n"
        "    48       -    -    -    -\n"
        "    96  1.6562  0/1    -   0%"
    )


# ---------------------------------------------------------------------------------------------------------
# YaRN and dynamic NTK through transformers' own rope code


@pytest.mark.parametrize("rope_type", ["yarn", "dynamic"])
def test_rope_scaling_restores_module_and_config(rope_type):
    model = tiny_model("llama")
    ids = torch.randint(0, 100, (1, 100))  # longer than L = 64, so dynamic scaling changes too
    original_module = model.model.rotary_emb
    original_params = dict(model.config.rope_parameters)
    with torch.no_grad():
        before = model(ids).logits
    with scaling.rope_scaling(model, rope_type, factor=2.0, context_window=64) as params:
        assert model.model.rotary_emb is not original_module
        assert type(model.model.rotary_emb) is type(original_module)
        assert model.model.rotary_emb.rope_type == rope_type
        assert model.config.rope_parameters == params and params["factor"] == 2.0
        with torch.no_grad():
            during = model(ids).logits
    with torch.no_grad():
        after = model(ids).logits
    assert not torch.allclose(before, during)
    assert torch.equal(before, after)
    assert model.model.rotary_emb is original_module
    assert model.config.rope_parameters == original_params


def test_rope_scaling_refuses_models_with_scaled_rope():
    model = tiny_model("llama3-rope")
    with pytest.raises(LongLMError, match="already uses rope type 'llama3'"):
        with scaling.rope_scaling(model, "yarn", factor=2.0, context_window=32):
            pass


# ---------------------------------------------------------------------------------------------------------
# The command


def test_method_all_runs_four_methods_with_json(model_dir, tmp_path):
    results, out = tmp_path / "r.jsonl", tmp_path / "out.json"
    grid = ("passkey", "--model", model_dir, "--lengths", "128,160", "--depths", "0,1", "--method", "all")
    result = run(*grid, "--results", results, "--json", "-o", out)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # written to the file instead
    data = json.loads(out.read_text())
    assert data["version"] == 1
    cases = data["cases"]
    assert len(cases) == 16 and data["L"] == L
    assert {c["method"] for c in cases} == {"none", "selfextend", "yarn", "dynamic"}
    for c in cases:
        assert set(c) >= {
            "method",
            "task",
            "length",
            "tokens",
            "depth",
            "trial",
            "expected",
            "answer",
            "correct",
            "seconds",
            "W",
            "G",
        }
        assert abs(c["tokens"] - c["length"]) <= 4
        assert c["correct"] == found_key(c["answer"], c["expected"])
        if c["method"] == "selfextend":
            plan = make_plan(context_window=L, length=c["length"] + 10)
            assert (c["W"], c["G"]) == (plan.W, plan.G) and c["extended"]
        if c["method"] in ("yarn", "dynamic"):
            assert c["factor"] == pytest.approx((c["length"] + 10) / L, abs=1e-3)
    # The same case has the same key for every method.
    keys = {}
    for c in cases:
        keys.setdefault((c["length"], c["depth"]), set()).add(c["expected"])
    assert all(len(v) == 1 for v in keys.values())
    assert [json.loads(line) for line in results.read_text().splitlines()] == cases
    tables = run(*grid, "--results", results)  # every case resumed: only the tables
    for title in ("none: plain model", "selfextend: SelfExtend", "yarn: YaRN", "dynamic: dynamic NTK"):
        assert title in tables.stdout
    assert len([line for line in result.stderr.splitlines() if line.startswith("[")]) == 16


def test_resume_skips_finished_cases(model_dir, tmp_path, monkeypatch):
    results = tmp_path / "r.jsonl"
    first = run(
        "passkey",
        "--model",
        model_dir,
        "--lengths",
        "128",
        "--depths",
        "0,1",
        "--method",
        "selfextend",
        "--results",
        results,
    )
    assert first.exit_code == 0, first.output
    lines = results.read_text().splitlines()
    assert len(lines) == 2
    # Mark the finished cases so that a re-run would show: they must be counted as they are.
    marked = [json.loads(line) | {"answer": "PREPOPULATED", "correct": True} for line in lines]
    results.write_text("".join(json.dumps(r) + "\n" for r in marked) + '{"cut off mid-wri')

    calls = []
    real_prefill = generate.prefill
    monkeypatch.setattr(generate, "prefill", lambda *a, **k: calls.append(1) or real_prefill(*a, **k))
    second = run(
        "passkey",
        "--model",
        model_dir,
        "--lengths",
        "128,160",
        "--depths",
        "0,1",
        "--method",
        "selfextend",
        "--results",
        results,
    )
    assert second.exit_code == 0, second.output
    assert len(calls) == 2  # only the two cases at length 160 ran
    progress = [line for line in second.stderr.splitlines() if line.startswith("[")]
    assert len(progress) == 2 and all("length=160" in line for line in progress)
    assert "2 case(s) taken from" in second.stderr
    records = results_file.load_results(results)
    assert len(records) == 4 and records[:2] == marked
    row = next(line for line in second.stdout.splitlines() if line.startswith("   128"))
    assert row.endswith("1/1  1/1  100%")  # the marked cases count as correct

    # A different seed is a different case.
    third = run(
        "passkey",
        "--model",
        model_dir,
        "--lengths",
        "128",
        "--depths",
        "0",
        "--method",
        "selfextend",
        "--seed",
        "1",
        "--results",
        results,
    )
    assert third.exit_code == 0 and len(results_file.load_results(results)) == 5


def test_fact_task_and_short_lengths(tokenizer, tmp_path):
    model_dir = save_tiny_llama(tmp_path / "wide", tokenizer, window=160)  # L = 160
    out = tmp_path / "out.json"
    result = run(
        "passkey",
        "--model",
        model_dir,
        "--task",
        "fact",
        "--lengths",
        "140,300",
        "--depths",
        "0.5",
        "--method",
        "none,selfextend",
        "--results",
        tmp_path / "r.jsonl",
        "--json",
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    cases = json.loads(out.read_text())["cases"]
    assert len(cases) == 4
    for c in cases:
        assert c["task"] == "fact" and c["expected"] in fact_task.FACT_ANSWERS
        assert c["haystack"] == "pride-and-prejudice.txt"
        assert c["correct"] == fact_task.fact_match(c["answer"], c["expected"])
        assert c["extended"] == (c["method"] == "selfextend" and c["length"] == 300)
    assert json.loads(out.read_text())["version"] == 1 and result.stdout == ""


def test_bad_options_are_one_line_errors(model_dir, tmp_path):
    result = run("passkey", "--model", model_dir, "--lengths", "4q", "--results", tmp_path / "r.jsonl")
    assert result.exit_code == 1 and result.stderr.strip().splitlines() == [
        "Error: bad length '4q': give token counts like 4k,8k,16000 (k = 1024)"
    ]
    result = run(
        "passkey",
        "--model",
        model_dir,
        "--task",
        "fact",
        "--haystack",
        tmp_path / "missing.txt",
        "--results",
        tmp_path / "r.jsonl",
    )
    assert result.exit_code == 1 and "does not exist" in result.stderr


def test_interrupted_run_keeps_finished_cases_and_resumes(model_dir, tmp_path, monkeypatch):
    results = tmp_path / "r.jsonl"
    args = (
        "passkey",
        "--model",
        model_dir,
        "--lengths",
        "128",
        "--depths",
        "0,0.5,1",
        "--method",
        "none",
        "--results",
        results,
    )
    real_prefill = generate.prefill
    calls = []

    def interrupted_on_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_prefill(*a, **k)

    monkeypatch.setattr(generate, "prefill", interrupted_on_third)
    first = run(*args)
    assert first.exit_code == 130 and first.stderr.endswith("Interrupted.\n")
    assert len(results_file.load_results(results)) == 2
    monkeypatch.setattr(generate, "prefill", lambda *a, **k: calls.append(1) or real_prefill(*a, **k))
    second = run(*args)
    assert second.exit_code == 0, second.output
    assert len(calls) == 4  # one more case, the one that was interrupted
    assert [r["depth"] for r in results_file.load_results(results)] == [0.0, 0.5, 1.0]


# ---------------------------------------------------------------------------------------------------------
# Bad results files, outputs and haystacks


def test_results_file_that_is_not_results_is_refused(model_dir, tmp_path):
    results = tmp_path / "photo.jsonl"
    results.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe binary")
    result = run("passkey", "--model", model_dir, "--lengths", "128", "--depths", "0", "--results", results)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {results} is not a longlm results file (no line is a finished case); give another --results "
        "path or remove it\n"
    )
    assert results.read_bytes() == b"\x89PNG\r\n\x1a\n\xff\xfe binary"


def test_results_lines_not_utf8_or_lacking_fields_run_again(model_dir, tmp_path):
    results = tmp_path / "r.jsonl"
    args = ("passkey", "--model", model_dir, "--lengths", "128", "--depths", "0,1", "--method", "none")
    first = run(*args, "--results", results)
    assert first.exit_code == 0, first.output
    good, other = results.read_text().splitlines()
    lacking = json.dumps({k: v for k, v in json.loads(other).items() if k != "correct"})
    results.write_bytes(good.encode() + b"\n\xff\xfe not utf-8\n" + lacking.encode() + b"\n")
    second = run(*args, "--results", results)
    assert second.exit_code == 0, second.output
    assert f"Warning: 2 line(s) of {results} are not finished cases; those cases run again" in second.stderr
    assert "1 case(s) taken from" in second.stderr
    assert len(results_file.load_results(results)) == 2


def test_output_into_a_missing_directory_fails_before_the_run(model_dir, tmp_path):
    out = tmp_path / "missing" / "out.json"
    result = run("passkey", "--model", model_dir, "--lengths", "128", "--json", "-o", out, "--results", tmp_path / "r")
    assert result.exit_code == 1
    assert result.stderr == f"Error: --output {out}: the directory {out.parent} does not exist\n"
    assert not (tmp_path / "r").exists()  # refused before any case ran


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "is empty (no text, or only whitespace)"), (b"\x00\x01\x02\x03" * 50, "is a binary file")],
)
def test_empty_or_binary_haystack_is_refused(model_dir, tmp_path, content, message):
    haystack = tmp_path / "hay.txt"
    haystack.write_bytes(content)
    result = run(
        "passkey",
        "--model",
        model_dir,
        "--task",
        "fact",
        "--haystack",
        haystack,
        "--lengths",
        "128",
        "--results",
        tmp_path / "r.jsonl",
    )
    assert result.exit_code == 1 and result.stderr.startswith(f"Error: {haystack} {message}")
    assert result.stderr.count("\n") == 1


def test_too_short_haystack_string_is_refused(count):
    with pytest.raises(InputError, match="too short"):
        fact_task.fact_prompt(count, 500, depth=0.5, answer="sage", haystack="")


def test_empty_method_lists_and_absurd_lengths_are_refused(model_dir, tmp_path):
    for option, value, message in [
        ("--method", "", "Error: no method given; choose from none, selfextend, yarn, dynamic, dca or all"),
        ("--method", ",,", "Error: no method given; choose from none, selfextend, yarn, dynamic, dca or all"),
        (
            "--lengths",
            "100000k",
            "Error: length '100000k' is 102,400,000 tokens; evaluation prompts go up to "
            "1,048,576 (1024k): beyond that no machine this runs on holds the prompt's activations",
        ),
    ]:
        result = run("passkey", "--model", model_dir, "--results", tmp_path / "r.jsonl", option, value)
        assert (result.exit_code, result.stderr.splitlines()[-1]) == (1, message)
    result = run("eval", "--model", model_dir, "--tasks", "vt", "--methods", ",", "--results", tmp_path / "e.jsonl")
    assert result.exit_code == 2 and "no method given" in result.stderr


def test_results_file_that_is_a_device_or_full_is_one_error(model_dir, tmp_path):
    result = run(
        "passkey", "--model", model_dir, "--lengths", 300, "--depths", 0, "--method", "none", "--results", "/dev/full"
    )
    assert (result.exit_code, result.stderr) == (
        1,
        "Error: the results file /dev/full is not a regular file; give a file path\n",
    )
    result = run(
        "passkey",
        "--model",
        model_dir,
        "--lengths",
        300,
        "--depths",
        0,
        "--method",
        "none",
        "--results",
        tmp_path / "r.jsonl",
        "--json",
        "-o",
        "/dev/full",
    )
    assert result.exit_code == 1
    last = result.stderr.splitlines()[-1]  # refused up front where /dev is not writable, else at the write
    assert last in (
        "Error: cannot write --output /dev/full: No space left on device",
        "Error: --output /dev/full is not writable",
    )


def test_passkey_cases_are_keyed_by_dtype(model_dir, tmp_path):
    results = tmp_path / "r.jsonl"
    args = ("passkey", "--model", model_dir, "--lengths", "128", "--depths", "0", "--results", results)
    first = run(*args, "--method", "selfextend", "--dtype", "float32")
    assert first.exit_code == 0, first.output
    (record,) = results_file.load_results(results)
    assert record["dtype"] == "float32"
    # Records from before the dtype was recorded were float32 runs: they resume as float32, not as bfloat16.
    results.write_text(json.dumps({k: v for k, v in record.items() if k != "dtype"}) + "\n")
    again = run(*args, "--method", "selfextend", "--dtype", "float32")
    assert again.exit_code == 0 and "1 case(s) taken from" in again.stderr, again.output
    other = run(*args, "--method", "selfextend", "--dtype", "bfloat16")
    assert other.exit_code == 0 and "taken from" not in other.stderr, other.output
    assert [r.get("dtype") for r in results_file.load_results(results)] == [None, "bfloat16"]


def test_dca_cases_say_their_chunks_in_the_record_and_the_progress_line(model_dir, tmp_path):
    from longlm_cli.engine.dca import DcaConfig

    results = tmp_path / "r.jsonl"
    result = run("passkey", "--model", model_dir, "--lengths", "128", "--depths", "0", "--method", "dca",
                 "--results", results)  # fmt: skip
    assert result.exit_code == 0, result.output
    (case,) = [json.loads(line) for line in results.read_text().splitlines()]
    dca = DcaConfig.for_window(L)
    assert case["extended"] and case["dca"] == {
        "chunk_size": dca.chunk_size,
        "local_window": dca.local_window,
        "chunk_len": dca.chunk_len,
    }
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("[")]
    expected = (
        f"dca chunks of {dca.chunk_len:,} tokens (chunk size {dca.chunk_size:,}, local window {dca.local_window:,})"
    )
    assert line.startswith(f"[1/1] {expected} length=128")
    assert "dca: Dual Chunk Attention" in result.stdout  # its table (a KeyError before)
