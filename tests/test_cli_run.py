"""summarize and ask end to end on a tiny random model saved to disk, against a straightforward reference."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from longlm_cli.answering import pipeline

from helpers import CORPUS, blank_pdf, reference_answer, run, text_pdf


def test_summarize_text_file_streams_the_reference_answer(tiny_dir, tmp_path):
    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)
    expected, plan, _ = reference_answer(tiny_dir, "summarize", CORPUS, max_new_tokens=12)
    assert plan.needs_extension and plan.G > 1  # the prompt really exceeds the tiny model's window
    result = run("summarize", doc, "--model", tiny_dir, "--max-new-tokens", 12)
    assert result.exit_code == 0, result.output
    assert result.stdout == expected + "\n"
    # Summaries never repeat a 4-gram of tokens by default; --no-repeat-ngram 0 turns that off.
    greedy, _, _ = reference_answer(tiny_dir, "summarize", CORPUS, max_new_tokens=12, no_repeat_ngram=0)
    assert greedy != expected
    off = run("summarize", doc, "--model", tiny_dir, "--max-new-tokens", 12, "--no-repeat-ngram", 0)
    assert off.exit_code == 0 and off.stdout == greedy + "\n", off.output


def test_ask_pdf_json_has_answer_plan_counts_and_timings(tiny_dir, tmp_path):
    pdf = tmp_path / "ledger.pdf"
    pdf.write_bytes(text_pdf(["The keeper wrote in a green ledger.", "Ships carried salt and wool."]))
    document = "[page 1]\nThe keeper wrote in a green ledger.\n\n[page 2]\nShips carried salt and wool."
    from longlm_cli.documents import read_documents

    assert read_documents([str(pdf)]).text.strip() == document.strip()
    question = "What colour is the ledger?"
    expected, plan, prompt_tokens = reference_answer(
        tiny_dir, "ask", read_documents([str(pdf)]).text, question, max_new_tokens=10
    )
    result = run("ask", pdf, question, "--model", tiny_dir, "--max-new-tokens", 10, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["answer"] == expected
    assert data["usage"]["prompt_tokens"] == prompt_tokens
    assert data["usage"]["total_tokens"] == prompt_tokens + data["usage"]["answer_tokens"]
    assert (data["plan"]["W"], data["plan"]["G"], data["extension"]) == (plan.W, plan.G, "selfextend")
    assert data["sources"] == [str(pdf)]
    assert set(data["timings"]) == {"load", "prefill", "decode"}


def test_stdin_and_verbose_plan_on_stderr(tiny_dir):
    result = run("summarize", "-", "--model", tiny_dir, "--max-new-tokens", 3, "-v", input=CORPUS)
    assert result.exit_code == 0, result.output
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"Model {tiny_dir} (cpu, float32, bfloat16 KV cache), L=64; prompt and answer N=")
    assert "SelfExtend W=8 G=" in first
    assert result.stderr.splitlines()[-1].startswith("Prompt ")


def test_short_document_is_not_extended(tiny_dir, tmp_path):
    doc = tmp_path / "short.txt"
    doc.write_text("Salt.")
    result = run(
        "ask",
        doc,
        "What?",
        "--model",
        tiny_dir,
        "--max-new-tokens",
        2,
        "--json",
        "--prompt-file",
        _write_template(tmp_path, "{document}\n{question}"),
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["extension"] is None


def test_extend_from_switches_selfextend_on_inside_the_window(tiny_dir, tmp_path):
    doc = tmp_path / "short.txt"
    doc.write_text("Salt and pepper were traded along the coast for many years.")
    template = _write_template(tmp_path, "{document}\n{question}")
    args = ("ask", doc, "What?", "--model", tiny_dir, "--max-new-tokens", 2, "--prompt-file", template)
    plain = json.loads(run(*args, "--json").stdout)
    early = json.loads(run(*args, "--json", "--extend-from", "0.25").stdout)
    assert plain["extension"] is None and plain["plan"]["N"] < 64
    assert early["extension"] == "selfextend" and (early["plan"]["W"], early["plan"]["G"]) == (8, 2)
    assert "(--extend-from), so SelfExtend is on inside L" in early["plan"]["reason"]
    dca = run(*args, "--extension", "dca", "--extend-from", "0.25")
    assert dca.exit_code == 2 and dca.stderr.splitlines()[-1] == (
        "Error: --extend-from set SelfExtend; --extension dca has no such setting"
    )


def test_sampling_is_reproducible_with_a_seed(tiny_dir, tmp_path):
    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)
    args = ("summarize", doc, "--model", tiny_dir, "--max-new-tokens", 8, "--temperature", 1.5)
    first, second = run(*args, "--seed", 3), run(*args, "--seed", 3)
    assert first.exit_code == 0 and first.stdout == second.stdout


def _write_template(tmp_path, text):
    path = tmp_path / "template.txt"
    path.write_text(text)
    return path


def _error_line(result):
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("missing.txt", None, "Error: {path} does not exist"),
        ("empty.txt", "  \n", "Error: {path} is empty"),
        ("binary.bin", b"\x00\x01\x02binary", "Error: {path} is a binary file"),
        ("locked.pdf", blank_pdf(password="pw"), "Error: {path} is an encrypted (password-protected) PDF"),
        ("scan.pdf", blank_pdf(), "Error: {path} has no extractable text; it may be a scanned image"),
    ],
)
def test_bad_documents(tiny_dir, tmp_path, name, data, message):
    path = tmp_path / name
    if isinstance(data, str):
        path.write_text(data)
    elif data is not None:
        path.write_bytes(data)
    line = _error_line(run("summarize", path, "--model", tiny_dir))
    assert line.startswith(message.format(path=str(path)))


def test_directory_is_refused(tiny_dir, tmp_path):
    assert _error_line(run("summarize", tmp_path, "--model", tiny_dir)).startswith(f"Error: {tmp_path} is a directory")


@pytest.mark.parametrize(
    "model, message",
    [
        ("llama2", "Error: unknown model 'llama2' (a family name known to `longlm plan`, not a model to load)"),
        ("./no/such/dir", "Error: model path './no/such/dir' does not exist"),
        ("missing.gguf", "Error: model file 'missing.gguf' does not exist"),
    ],
)
def test_bad_models(tmp_path, model, message):
    doc = tmp_path / "d.txt"
    doc.write_text("text")
    assert _error_line(run("summarize", doc, "--model", model)).startswith(message)


def test_a_file_that_is_not_a_model_is_named_as_such(tmp_path):
    doc = tmp_path / "ledger.txt"
    doc.write_text("text")
    assert _error_line(run("ask", doc, "Who?", "--model", doc)) == (
        f"Error: '{doc}' is a file but not a model: give a model directory with config.json or a .gguf file"
    )


def test_unreachable_hub_is_one_clear_line(tmp_path):
    """A hub id that is not cached, offline: one clear line (a fresh process, so HF_HUB_OFFLINE is read)."""
    doc = tmp_path / "d.txt"
    doc.write_text("text")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run(
        [sys.executable, "-m", "longlm_cli.cli", "summarize", str(doc), "--model", "someorg/no-such-model"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(
        "Error: could not load model 'someorg/no-such-model' from the Hugging Face Hub (HF_HUB_OFFLINE is set): "
    )


def test_model_without_rope_is_refused_when_extension_is_needed(gpt2_dir, tmp_path):
    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)
    line = _error_line(run("summarize", doc, "--model", gpt2_dir))
    assert line == (
        "Error: GPT2LMHeadModel (model_type 'gpt2') has no rotary position embedding (RoPE); "
        "SelfExtend only applies to RoPE models"
    )


def test_document_too_long_even_when_extended(tiny_dir, tmp_path):
    doc = tmp_path / "huge.txt"
    doc.write_text(CORPUS * 60)
    line = _error_line(run("summarize", doc, "--model", tiny_dir))
    assert line.startswith("Error: document too long: ")
    assert "the largest sensible group size is 64" in line


def test_a_document_the_memory_cannot_hold_is_refused_before_the_prefill(tiny_dir, tmp_path, monkeypatch):
    from longlm_cli.runtime import loader as models

    doc = tmp_path / "doc.txt"
    doc.write_text(CORPUS * 3)
    monkeypatch.setattr(models, "available_memory", lambda: 1000)
    # before loading: the model's files say what its weights and KV cache will take (here not even in int4)
    line = _error_line(run("ask", doc, "What is it?", "--model", tiny_dir))
    assert line.startswith(f"Error: model '{tiny_dir}' needs weights ") and line.endswith(
        " with room to run; 1000 B of memory is available: use a smaller model or a shorter input"
    )
    # where the files cannot tell, the session refuses before the prefill
    monkeypatch.setattr(models, "footprint_of", lambda kind, location: None)
    line = _error_line(run("ask", doc, "What is it?", "--model", tiny_dir))
    assert line.startswith("Error: holding ") and line.endswith(
        " of memory for its KV cache; 1000 B is available: use a shorter input or a smaller model"
    )


def test_a_checkpoint_too_large_for_memory_names_the_quantize_that_fits(tiny_dir, tmp_path, monkeypatch):
    from longlm_cli.models.tokens import count_tokens
    from longlm_cli.runtime import loader as models

    doc = tmp_path / "doc.txt"
    doc.write_text(CORPUS)
    footprint = models.footprint_of("dir", str(tiny_dir))
    tokens = count_tokens(CORPUS, model=str(tiny_dir)).count + 50  # the document, and room for the template
    int8_total = footprint.needed_bytes("int8", 4, tokens)
    assert footprint.weights_bytes("none", 4) - footprint.weights_bytes("int8", 4) > 100_000  # a clear gap
    monkeypatch.setattr(models, "available_memory", lambda: int8_total + 1000)
    args = ("ask", doc, "What is it?", "--model", tiny_dir, "--max-new-tokens", 2)
    line = _error_line(run(*args, "--quantize", "none"))
    assert line.startswith(f"Error: model '{tiny_dir}' needs weights ") and "(32-bit floats)" in line
    assert line.endswith("available: --quantize int8 would fit")
    # auto takes that form by itself, and -v says so
    verbose = run(*args, "-v")
    assert verbose.exit_code == 0, verbose.output
    lines = verbose.stderr.splitlines()
    assert "Weights int8: float weights and the KV cache would not fit in memory" in lines
    assert any(line.startswith("Memory: weights ") and "(int8) + KV cache " in line for line in lines)


def test_window_at_or_above_l_is_refused(tiny_dir, tmp_path):
    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)
    line = _error_line(run("summarize", doc, "--model", tiny_dir, "--window", 64))
    assert line.startswith("Error: window W=64 must be smaller than the pretraining window L=64")


@pytest.mark.parametrize(
    "args, message",
    [
        (("--window", 0), "Error: Invalid value for '--window' / '-w': 0 is not in the range x>=1."),
        (("--group-size", 0), "Error: Invalid value for '--group-size' / '-g': 0 is not in the range 1<=x<=64."),
        (("-g", 65), "Error: Invalid value for '--group-size' / '-g': 65 is not in the range 1<=x<=64."),
    ],
)
def test_window_and_group_ranges_are_the_options_own(tiny_dir, tmp_path, args, message):
    """Click carries the ranges: a usage error (exit 2) before anything is read or loaded."""
    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)
    result = run("summarize", doc, "--model", tiny_dir, *args)
    assert result.exit_code == 2 and result.stderr.strip().splitlines()[-1] == message


def test_bad_prompt_file(tiny_dir, tmp_path):
    doc = tmp_path / "d.txt"
    doc.write_text("text")
    template = _write_template(tmp_path, "no placeholder here")
    line = _error_line(run("summarize", doc, "--model", tiny_dir, "--prompt-file", template))
    assert line == f"Error: prompt template {str(template)!r} must contain {{document}} exactly once"


def test_prompt_file_that_is_not_utf8(tmp_path):
    doc = tmp_path / "d.txt"
    doc.write_text("text")
    template = _write_template(tmp_path, "")
    template.write_bytes(b"\xff\xfe{document} {question}")
    line = _error_line(run("ask", doc, "Who?", "--prompt-file", template))
    assert (
        line == f"Error: prompt file {str(template)!r} is not UTF-8 text (invalid byte at offset 0); save it as UTF-8"
    )


def test_summarize_prompt_file_with_a_question_placeholder(tmp_path):
    doc = tmp_path / "d.txt"
    doc.write_text("text")
    template = _write_template(tmp_path, "{document}\n\nAnswer: {question}")
    assert _error_line(run("summarize", doc, "--prompt-file", template)) == (
        f"Error: prompt template {str(template)!r} contains {{question}}, but summarize has no question; "
        "remove it, or use `longlm ask` with this template"
    )


def test_prompt_file_is_read_under_the_input_cap(tmp_path, monkeypatch):
    doc = tmp_path / "d.txt"
    doc.write_text("text")
    template = _write_template(tmp_path, "{document} {question} " + "x" * 2000)
    monkeypatch.setenv("LONGLM_MAX_INPUT_BYTES", "1000")
    assert _error_line(run("ask", doc, "Who?", "--prompt-file", template)) == (
        f"Error: prompt file {str(template)!r} is larger than the input limit of 1,000 bytes; "
        "set LONGLM_MAX_INPUT_BYTES to a larger number of bytes to read it"
    )
    missing = tmp_path / "none.txt"
    line = _error_line(run("ask", doc, "Who?", "--prompt-file", missing))
    assert line == f"Error: prompt file {str(missing)!r} does not exist"


@pytest.mark.parametrize("question", ["", "  \t ", "\x1b\x7f\n"])
def test_empty_question_is_refused(tmp_path, question):
    doc = tmp_path / "d.txt"
    doc.write_text("text")
    line = _error_line(run("ask", doc, question))
    assert line == "Error: the question is empty (no text, or only whitespace); give the question to answer"


def test_question_with_bytes_that_are_not_utf8_is_refused(tmp_path):
    doc = tmp_path / "d.txt"
    doc.write_text("text")
    line = _error_line(run("ask", doc, os.fsdecode(b"caf\xe9?")))  # how Python passes such argv bytes on
    assert line == "Error: the question is not valid UTF-8 text; give it in UTF-8"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e309"])
@pytest.mark.parametrize("command", [("summarize", "d.txt"), ("ask", "d.txt", "Who?"), ("chat", "d.txt")])
def test_non_finite_temperature_is_refused(command, value):
    result = run(*command, "--temperature", value)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert (
        result.stderr.splitlines()[-1] == f"Error: Invalid value for '--temperature': {value!r} is not a finite number."
    )


def test_verbose_names_the_encoding_assumed(tiny_dir, tmp_path):
    legacy, plain = tmp_path / "notes.txt", tmp_path / "plain.txt"
    legacy.write_bytes(("Café crème. " + CORPUS).encode("cp1252"))
    plain.write_text("Salt.")
    args = ("summarize", legacy, plain, "--model", tiny_dir, "--max-new-tokens", 1, "--no-cache")
    verbose, quiet = run(*args, "-v"), run(*args)
    assert verbose.exit_code == 0 and quiet.exit_code == 0, verbose.output
    assert verbose.stderr.splitlines()[0] == f"Read {legacy} as cp1252"
    assert verbose.stderr.splitlines()[1].startswith("Model ")  # one line: plain.txt is UTF-8
    assert quiet.stderr == ""


def test_interrupt_exits_cleanly(tiny_dir, tmp_path, monkeypatch):
    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "prefill", interrupted)
    result = run("summarize", doc, "--model", tiny_dir)
    assert result.exit_code == 130
    assert result.stderr == "Interrupted.\n"


@pytest.mark.skipif(shutil.which("longlm") is None, reason="the longlm console script is not installed")
def test_installed_command(tiny_dir, tmp_path):
    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)
    done = subprocess.run(
        ["longlm", "summarize", str(doc), "--model", str(tiny_dir), "--max-new-tokens", "12"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    expected, _, _ = reference_answer(tiny_dir, "summarize", CORPUS, max_new_tokens=12)
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected + "\n"
    done = subprocess.run(["longlm", "summarize", str(tmp_path / "nope.txt")], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr == f"Error: {tmp_path / 'nope.txt'} does not exist\n"


CONTRACT_KEYS = {
    "version",
    "command",
    "turn",
    "question",
    "answer",
    "finish_reason",
    "model",
    "sources",
    "extension",
    "plan",
    "usage",
    "timings",
    "cache",
    "citations",
    "evidence",
    "extension_settings",
}


def test_one_json_contract_for_ask_summarize_and_chat(tiny_dir, tmp_path):
    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)
    common = ("--model", tiny_dir, "--max-new-tokens", 4, "--json")
    asked = json.loads(run("ask", doc, "Who?", *common).stdout)
    summary = json.loads(run("summarize", doc, *common).stdout)
    turn = json.loads(run("chat", doc, *common, input="Who?\n").stdout)
    for data, command, question, number in [
        (asked, "ask", "Who?", None),
        (summary, "summarize", None, None),
        (turn, "chat", "Who?", 1),
    ]:
        assert set(data) == CONTRACT_KEYS
        assert (data["version"], data["command"], data["question"], data["turn"]) == (1, command, question, number)
        assert data["finish_reason"] == "length" and data["sources"] == [str(doc)]
        assert set(data["usage"]) == {"prompt_tokens", "answer_tokens", "total_tokens"}
        assert data["usage"]["answer_tokens"] == 4
        assert set(data["timings"]) == {"load", "prefill", "decode"}
        assert set(data["plan"]) >= {"L", "N", "W", "G", "capacity", "needs_extension"}
    assert asked["answer"] == turn["answer"]  # the same prompt, greedy


def test_output_file_gets_the_answer_and_stdout_stays_empty(tiny_dir, tmp_path):
    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)
    common = ("ask", doc, "Who counted the ships?", "--model", tiny_dir, "--max-new-tokens", 6)
    shown = run(*common).stdout
    written = run(*common, "-o", tmp_path / "answer.txt")
    assert written.exit_code == 0 and written.stdout == ""
    assert (tmp_path / "answer.txt").read_text() == shown
    as_json = run(*common, "--json", "--output", tmp_path / "answer.json")
    assert as_json.stdout == "" and json.loads((tmp_path / "answer.json").read_text())["answer"] + "\n" == shown
    chat = run("chat", doc, "--model", tiny_dir, "--max-new-tokens", 6, "-o", tmp_path / "chat.txt", input="Who?\n")
    assert chat.exit_code == 0, chat.output
    assert (tmp_path / "chat.txt").read_text() == f"Q: Who?\nA: {chat.stdout.strip()}\n"
    jsonl = tmp_path / "c.jsonl"
    two = run("chat", doc, "--model", tiny_dir, "--max-new-tokens", 2, "--json", "-o", jsonl, input="A?\nB?\n")
    lines = jsonl.read_text().splitlines()
    assert [json.loads(line)["question"] for line in lines] == ["A?", "B?"] and two.stdout.splitlines() == lines


def test_unwritable_output_is_refused_before_any_work(tiny_dir, tmp_path):
    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)
    result = run("ask", doc, "Who?", "--model", tiny_dir, "-o", tmp_path / "missing" / "a.txt")
    assert result.exit_code == 1
    assert (
        result.stderr
        == f"Error: --output {tmp_path / 'missing' / 'a.txt'}: the directory {tmp_path / 'missing'} does not exist\n"
    )


def test_output_shape_options_add_instructions_after_the_question(tiny_dir, tmp_path):
    from longlm_cli.answering.templates import OutputShape, load_template

    shape = OutputShape(words=20, bullets=True, language="French", instruction="Name the ships.")
    assert (
        load_template("ask")
        .shaped(shape)
        .text.endswith(
            "Question: {question}\n\nUse about 20 words. Write it as a bulleted list: one point per line, each "
            "starting with '- '. Write it in French. Name the ships.\n"
        )
    )
    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)
    question = "Who counted the ships?"
    expected, _, _ = reference_answer(tiny_dir, "ask", CORPUS, question, max_new_tokens=8, shape=shape)
    args = ("--words", 20, "--bullets", "--language", "French", "--instruction", "Name the ships.")
    result = run("ask", doc, question, "--model", tiny_dir, "--max-new-tokens", 8, *args)
    assert result.exit_code == 0, result.output
    assert result.stdout == expected + "\n"
    blank = run("ask", doc, question, "--model", tiny_dir, "--language", "  ")
    assert blank.exit_code == 1 and blank.stderr == "Error: --language is empty\n"


def test_each_answers_every_file_on_its_own_with_one_model_load(tiny_dir, tmp_path, monkeypatch):
    from longlm_cli.answering import pipeline

    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text(CORPUS)
    second.write_text(CORPUS.replace("salt", "amber"))
    missing = tmp_path / "missing.txt"
    singles = [
        json.loads(run("ask", doc, "Who?", "--model", tiny_dir, "--max-new-tokens", 4, "--json").stdout)
        for doc in (first, second)
    ]
    loads = []
    real = pipeline.load_model
    monkeypatch.setattr(pipeline, "load_model", lambda *a, **k: loads.append(1) or real(*a, **k))
    result = run("ask", first, missing, second, "Who?", "--each", "--model", tiny_dir, "--max-new-tokens", 4, "--json")
    assert result.exit_code == 1 and len(loads) == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["sources"] for line in lines] == [[str(first)], [str(missing)], [str(second)]]
    assert [lines[0]["answer"], lines[2]["answer"]] == [s["answer"] for s in singles]
    assert set(lines[1]) == {"version", "command", "sources", "error"}
    assert result.stderr.splitlines() == [f"Error: {missing}: {lines[1]['error']}"]
    text = run("summarize", first, second, "--each", "--model", tiny_dir, "--max-new-tokens", 3)
    assert text.exit_code == 0 and text.stdout.startswith(f"### {first}\n\n")
    assert f"\n### {second}\n\n" in text.stdout


def test_a_kv_dtype_the_model_cannot_take_is_one_error(tiny_dir, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text(CORPUS)
    result = run("ask", doc, "What is it?", "--model", tiny_dir, "--dtype", "bfloat16", "--kv-dtype", "float32")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: --kv-dtype float32 needs a float32 model; this one computes in bfloat16 on cpu: use --kv-dtype auto\n"
    )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this platform")
def test_output_that_cannot_be_written_is_one_error_line():
    """A full disk (/dev/full) and a closed standard output end in one `Error:` line and exit code 1."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "longlm_cli.cli", "plan", "--model", "llama2", "--length", "30000"]
    with open("/dev/full", "w") as full:
        result = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert (result.returncode, result.stderr) == (1, "Error: cannot write the output: No space left on device\n")
    closed = subprocess.run(
        ["bash", "-c", 'exec 1>&-; exec "$@"', "_", *command], stderr=subprocess.PIPE, text=True, timeout=120
    )
    assert (closed.returncode, closed.stderr) == (1, "Error: standard output is closed; longlm has nowhere to write\n")


def test_output_naming_an_input_is_refused_before_any_work(tiny_dir, tmp_path):
    doc, template = tmp_path / "doc.txt", tmp_path / "prompt.txt"
    doc.write_text(CORPUS)
    template.write_text("{document}\n{question}")
    link = tmp_path / "link.txt"
    link.symlink_to(doc)
    for output, named in ((doc, doc), (link, doc), (template, template)):
        result = run("ask", doc, "Who?", "--model", tiny_dir, "--prompt-file", template, "-o", output)
        assert result.exit_code == 1
        assert (
            result.stderr == f"Error: --output {output} is the input {named}: the answer would replace the document\n"
        )
    assert doc.read_text() == CORPUS and template.read_text() == "{document}\n{question}"


def test_an_answer_budget_beyond_any_window_is_a_bad_option_and_a_large_one_says_so(tiny_dir, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text(CORPUS)
    huge = run("ask", doc, "Who?", "--model", tiny_dir, "--max-new-tokens", 10**12)
    assert huge.exit_code == 2 and "'--max-new-tokens': 1000000000000 is not in the range 1<=x<=1048576" in huge.stderr
    large = run("ask", doc, "Who?", "--model", tiny_dir, "--max-new-tokens", 5000)
    assert large.exit_code == 1
    assert (
        large.stderr.startswith("Error: the prompt's ")
        and "tokens and an answer of up to 5,000 tokens: " in large.stderr
    )


def test_sigterm_stops_longlm_as_ctrl_c_does(monkeypatch, capsys):
    """A SIGTERM is an interrupt: what was being written is cleaned up as after Ctrl-C, and the exit is 130."""
    import os
    import signal
    import time

    from longlm_cli.cli import app

    def terminated(**kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
        raise AssertionError("SIGTERM did not interrupt")

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(app.cli, "main", terminated)
    try:
        with pytest.raises(SystemExit) as stopped:
            app.main()
    finally:
        signal.signal(signal.SIGTERM, before)
    assert stopped.value.code == app.INTERRUPTED_EXIT_CODE and capsys.readouterr().err == "Interrupted.\n"
