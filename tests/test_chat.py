"""`longlm chat` over piped stdin: one answer per line, each equal to a fresh run over the whole conversation."""

import json
from pathlib import Path

import pytest
import torch

from longlm_cli.answering.chat import render_conversation, start_chat
from longlm_cli.answering.pipeline import ModelSettings, Reading, configure
from longlm_cli.answering.templates import chat_token_ids, load_template, user_message
from longlm_cli.errors import ModelError
from longlm_cli.runtime.generate import SamplingSettings, Session, decode, prefill
from longlm_cli.runtime.loader import load_model

from helpers import CORPUS, run, train_tokenizer

TOKENS = 6


@pytest.fixture
def doc(tmp_path):
    path = tmp_path / "ships.txt"
    path.write_text(CORPUS)
    return path


def fresh_answer(loaded, plan, messages):
    """Greedy answer of a fresh session that prefills the whole rendered conversation at once."""
    configure(loaded.model, plan)
    session = Session.start(loaded.model)
    ids = render_conversation(loaded.tokenizer, messages)
    logits = prefill(session, torch.tensor([ids]))
    return decode(session, loaded.tokenizer, logits, settings=SamplingSettings(max_new_tokens=TOKENS)).text


def test_piped_questions_are_answered_in_turn(tiny_dir, doc):
    result = run(
        "chat",
        doc,
        "--model",
        tiny_dir,
        "--max-new-tokens",
        TOKENS,
        "--json",
        input="Who counted the ships?\n\nWhat did they carry?\n",
    )
    assert result.exit_code == 0, result.output
    turns = [json.loads(line) for line in result.stdout.splitlines()]
    assert [t["question"] for t in turns] == ["Who counted the ships?", "What did they carry?"]
    assert [t["cache"] for t in turns] == ["miss", "conversation"]

    loaded = load_model(str(tiny_dir), device="cpu")
    chat = start_chat(
        [str(doc)],
        reading=Reading(model=ModelSettings(model=str(tiny_dir), device="cpu"), loaded=loaded),
        sampling=SamplingSettings(max_new_tokens=TOKENS),
    )
    first = {"role": "user", "content": user_message(load_template("ask"), CORPUS, "Who counted the ships?")}
    assert turns[0]["answer"] == fresh_answer(loaded, chat.plan, [first])
    conversation = [
        first,
        {"role": "assistant", "content": turns[0]["answer"]},
        {"role": "user", "content": "What did they carry?"},
    ]
    assert turns[1]["answer"] == fresh_answer(loaded, chat.plan, conversation)

    again = run(
        "chat",
        doc,
        "--model",
        tiny_dir,
        "--max-new-tokens",
        TOKENS,
        "--json",
        input="Who counted the ships?\nWhat did they carry?\n",
    )
    untimed = lambda turn: {k: v for k, v in turn.items() if k != "timings"}  # noqa: E731
    repeated = [untimed(json.loads(line)) for line in again.stdout.splitlines()]
    assert repeated == [untimed({**turns[0], "cache": "hit"}), untimed(turns[1])]
    assert [(t["version"], t["command"], t["turn"], t["finish_reason"]) for t in turns] == [
        (1, "chat", 1, "length"),
        (1, "chat", 2, "length"),
    ]


def test_library_chat_matches_fresh_runs_over_three_turns(tiny_dir, doc):
    loaded = load_model(str(tiny_dir), device="cpu")
    chat = start_chat(
        [str(doc)],
        reading=Reading(model=ModelSettings(model=str(tiny_dir), device="cpu"), loaded=loaded),
        sampling=SamplingSettings(max_new_tokens=TOKENS),
    )
    for question in ("Who?", "Where is the harbour?", "And the ledger?"):
        turn = chat.ask(question)
        history = chat.messages[:-1]
        plan = chat.plan
        assert turn.text == fresh_answer(loaded, plan, history)
        configure(loaded.model, plan)
        assert chat.session.length == len(chat.cached_ids)


def test_plain_text_output_and_exit(tiny_dir, doc):
    result = run(
        "chat", doc, "--model", tiny_dir, "--max-new-tokens", TOKENS, "--no-cache", input="Who?\n/exit\nNever asked?\n"
    )
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1


def test_line_that_is_not_utf8_is_answered_with_its_bytes_replaced_and_one_warning(tiny_dir, doc):
    result = run("chat", doc, "--model", tiny_dir, "--max-new-tokens", 2, "--json", input=b"Who?\n\xc3\x28 what?\n")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["question"] for line in result.stdout.splitlines()] == ["Who?", "\ufffd( what?"]
    assert result.stderr == (
        "Warning: line 2 of stdin is not valid UTF-8; the invalid bytes were replaced with U+FFFD\n"
    )


def test_lines_without_visible_text_are_skipped(tiny_dir, doc):
    lines = b"\x01\x02\n \t\n\xe2\x80\x8b\n\x1b\nWho?\n"  # controls, blanks, a zero-width space, ESC
    result = run("chat", doc, "--model", tiny_dir, "--max-new-tokens", 2, "--json", input=lines)
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["question"] for line in result.stdout.splitlines()] == ["Who?"]


def test_line_over_the_input_cap_is_one_error_line(tiny_dir, doc, monkeypatch):
    monkeypatch.setenv("LONGLM_MAX_INPUT_BYTES", "1000")
    result = run("chat", doc, "--model", tiny_dir, "--max-new-tokens", 2, input="Who?\n" + "x" * 1001 + "\n")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.splitlines()[-1] == (
        "Error: line 2 of stdin is larger than the input limit of 1,000 bytes; set LONGLM_MAX_INPUT_BYTES to a "
        "larger number of bytes to read it"
    )


@pytest.mark.parametrize(
    "template, detail",
    [
        ("{{ raise_exception('this template refuses') }}", "this template refuses"),
        ("{% for %}", "Expected an expression, got 'end of statement block'"),
    ],
)
def test_chat_template_that_fails_is_a_model_error(template, detail):
    tokenizer = train_tokenizer([CORPUS], vocab_size=300, special_tokens=["<|end|>"], chat_template=template)
    with pytest.raises(ModelError) as error:
        chat_token_ids(tokenizer, "Who?")
    assert str(error.value) == f"the model's chat template cannot be used: {detail}"


def test_conversation_outgrowing_the_plan_is_one_error_line(tiny_dir, doc):
    result = run(
        "chat",
        doc,
        "--model",
        tiny_dir,
        "--max-new-tokens",
        20,
        "--budget",
        25,
        "-w",
        8,
        "-g",
        8,
        input="Who counted the ships every evening?\n" * 10,
    )
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith("Error: the conversation has outgrown its plan: ")
    assert "--budget" in errors[0] and "Traceback" not in result.output


def test_stdin_document_is_refused(tiny_dir):
    result = run("chat", "-", "--model", tiny_dir, input="q\n")
    assert result.exit_code == 2 and "give the documents as files" in result.stderr


def test_tiny_temperature_is_greedy():
    """1e-45 overflows the scaled logits; its limit is greedy decoding, not a traceback."""
    from longlm_cli.runtime.sampling import logits_processors, next_token

    logits = torch.tensor([[0.5, 3.0, -1.0, 2.0]])
    settings = SamplingSettings(max_new_tokens=1, temperature=1e-45)
    assert next_token(logits, [], settings, logits_processors(settings), torch.Generator().manual_seed(0)) == 1


def test_typed_questions_use_readline_history_in_the_cache_dir(monkeypatch, tmp_path):
    import builtins
    import os

    from longlm_cli.cli import questions as questions_module

    typed = iter(["Who counted the ships?", "  ", "/exit", "never asked"])
    prompts = []

    def fake_input(prompt=""):
        prompts.append(prompt)
        return next(typed)

    monkeypatch.setattr(builtins, "input", fake_input)
    assert list(questions_module.questions(interactive=True)) == ["Who counted the ships?"]
    assert prompts == [""] * 3  # stdout is not a terminal here: the "> " prompt went to stderr
    pytest.importorskip("readline", reason="this Python has no readline: no history to keep")
    assert (Path(os.environ["LONGLM_CACHE_DIR"]) / "chat_history").is_file()


@pytest.mark.parametrize("kind", ["symlink", "fifo", "huge"])
def test_a_chat_history_that_is_not_longlms_own_is_neither_read_nor_followed(monkeypatch, tmp_path, capsys, kind):
    """A link to another file (say ~/.bashrc) or a fifo at the history's name is neither read nor written through
    (one warning, no hang); a history larger than longlm writes is not read and starts again."""
    import builtins
    import os

    from longlm_cli.cli import questions as questions_module

    readline = pytest.importorskip("readline", reason="this Python has no readline: no history to keep")
    readline.clear_history()
    history = Path(os.environ["LONGLM_CACHE_DIR"]) / "chat_history"
    history.parent.mkdir(parents=True, exist_ok=True)
    bashrc = tmp_path / "bashrc"
    bashrc.write_text("export SECRET=1\n" * 2000)
    if kind == "symlink":
        history.symlink_to(bashrc)
    elif kind == "fifo":
        os.mkfifo(history)
    else:
        history.write_text("x" * (questions_module.HISTORY_MAX_BYTES + 1))
    typed = iter(["Who counted the ships?", "/exit"])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(typed))
    assert list(questions_module.questions(interactive=True)) == ["Who counted the ships?"]
    assert readline.get_current_history_length() == 0  # nothing read: the calls above went through a stub
    warning = {"symlink": "is a symbolic link", "fifo": "is not a regular file", "huge": "it starts again"}[kind]
    assert capsys.readouterr().err.count(warning) == 1
    assert bashrc.read_text() == "export SECRET=1\n" * 2000
    if kind == "symlink":
        assert history.is_symlink()
    elif kind == "huge":
        assert history.is_file() and history.stat().st_size < 1000  # replaced by what this chat kept


def test_typed_question_at_eof_ends_the_chat(monkeypatch):
    import builtins

    from longlm_cli.cli import questions as questions_module

    def eof(prompt=""):
        raise EOFError

    monkeypatch.setattr(builtins, "input", eof)
    assert list(questions_module.questions(interactive=True)) == []
