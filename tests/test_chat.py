"""`longlm chat` over piped stdin: one answer per line, each equal to a fresh run over the whole conversation."""

import json

import pytest
import torch

from longlm_cli.chat import render_conversation, start_chat
from longlm_cli.pipeline import ModelSettings, configure
from longlm_cli.runtime.generate import SamplingSettings, Session, decode, prefill
from longlm_cli.runtime.models import load_model
from longlm_cli.templates import load_template, user_message

from helpers import CORPUS, run

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
        model=ModelSettings(model=str(tiny_dir), device="cpu"),
        sampling=SamplingSettings(max_new_tokens=TOKENS),
        loaded=loaded,
    )
    first = {"role": "user", "content": user_message(load_template("ask"), CORPUS, "Who counted the ships?")}
    assert turns[0]["text"] == fresh_answer(loaded, chat.plan, [first])
    conversation = [
        first,
        {"role": "assistant", "content": turns[0]["text"]},
        {"role": "user", "content": "What did they carry?"},
    ]
    assert turns[1]["text"] == fresh_answer(loaded, chat.plan, conversation)

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
    assert [json.loads(line) for line in again.stdout.splitlines()] == [{**turns[0], "cache": "hit"}, turns[1]]


def test_library_chat_matches_fresh_runs_over_three_turns(tiny_dir, doc):
    loaded = load_model(str(tiny_dir), device="cpu")
    chat = start_chat(
        [str(doc)],
        model=ModelSettings(model=str(tiny_dir), device="cpu"),
        sampling=SamplingSettings(max_new_tokens=TOKENS),
        loaded=loaded,
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
