"""`longlm tune`: a sweep on the user's model, its winner saved and then used by ask (shown with -v), or not."""

import json
import os
from pathlib import Path

import pytest

from longlm_cli.planning.tuned import Tuned, find_tuned, model_key, save_tuned

from helpers import CORPUS, reference_answer, run


def test_tune_prints_its_estimate_runs_and_saves_the_winner(tiny_dir):
    result = run("tune", "-m", tiny_dir, "--length", "700", "--tasks", "vt", "--samples", "1", "--yes")
    assert result.exit_code == 0, result.output
    first = result.stderr.splitlines()[0]
    assert (
        first.startswith(f"Tuning {tiny_dir} at 700 tokens: selfextend, selfextend:16x") and "minutes on cpu" in first
    )
    stored = json.loads((Path(os.environ["LONGLM_CACHE_DIR"]) / "tuned.json").read_text())
    [entry] = stored[model_key(str(tiny_dir))].values()
    assert entry["label"] in entry["scores"] and entry["scores"][entry["label"]] == max(entry["scores"].values())
    assert f"{entry['label']:>24}" in result.stdout and "<- saved" in result.stdout
    again = run("tune", "-m", tiny_dir, "--length", "700", "--tasks", "vt", "--samples", "1", "--yes")
    assert "4 case(s) taken from" in again.stderr  # resumed, nothing run twice


def test_tune_without_yes_on_a_pipe_is_refused(tiny_dir):
    result = run("tune", "-m", tiny_dir, "--length", "700", "--tasks", "vt", "--samples", "1")
    assert result.exit_code == 2 and "not starting without --yes" in result.stderr


def test_ask_uses_the_tuned_setting_near_its_length_unless_told_not_to(tiny_dir, tmp_path):
    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)
    args = ("ask", doc, "Who?", "--model", tiny_dir, "--max-new-tokens", 6, "--json")
    planned = json.loads(run(*args).stdout)
    N = planned["plan"]["N"]
    save_tuned(
        Tuned(
            model=model_key(str(tiny_dir)),
            length=N,
            method="selfextend",
            window=16,
            group_size=24,
            label="selfextend:16x24",
            scores={"selfextend:16x24": 50.0, "selfextend": 0.0},
            samples=1,
        )
    )
    assert find_tuned(model_key(str(tiny_dir)), 2 * N) is None  # beyond its reach
    tuned = run(*args, "-v")
    data = json.loads(tuned.stdout)
    assert (data["plan"]["W"], data["plan"]["G"]) == (16, 24)
    assert tuned.stderr.splitlines()[0] == (
        f"Using longlm tune's selfextend:16x24 (tuned at {N:,} tokens: 50.0); --no-tuned ignores it"
    )
    explicit = json.loads(run(*args, "-w", 16, "-g", 24).stdout)
    assert data["answer"] == explicit["answer"]
    ignored = json.loads(run(*args, "--no-tuned").stdout)
    assert (ignored["plan"]["W"], ignored["plan"]["G"]) == (planned["plan"]["W"], planned["plan"]["G"])
    own = json.loads(run(*args, "-g", 30).stdout)
    assert own["plan"]["G"] == 30  # a setting of the user's own wins over the tuned one
    # `longlm plan` shows the same setting for that length, and says where it comes from.
    shown = run("plan", "--model", tiny_dir, "--length", N)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines()[0] == (
        f"Tuned:                longlm tune's selfextend:16x24 (tuned at {N:,} tokens: 50.0): the W and G below; "
        "--no-tuned ignores it"
    )
    assert "Neighbour window W:   16 tokens" in shown.stdout and "Group size G:         24" in shown.stdout
    as_json = json.loads(run("plan", "--model", tiny_dir, "--length", N, "--json").stdout)
    assert (as_json["W"], as_json["G"]) == (16, 24) and as_json["tuned"].startswith("longlm tune's selfextend:16x24")
    untuned = json.loads(run("plan", "--model", tiny_dir, "--length", N, "--json", "--no-tuned").stdout)
    assert (untuned["W"], untuned["G"], untuned["tuned"]) == (planned["plan"]["W"], planned["plan"]["G"], None)
    given = json.loads(run("plan", "--model", tiny_dir, "--length", N, "--json", "-g", 30).stdout)
    assert given["G"] == 30 and given["tuned"] is None


def test_damaged_tuned_file_is_one_warning(tiny_dir, tmp_path):
    (Path(os.environ["LONGLM_CACHE_DIR"])).mkdir(parents=True, exist_ok=True)
    (Path(os.environ["LONGLM_CACHE_DIR"]) / "tuned.json").write_text("{not json")
    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)
    result = run("ask", doc, "Who?", "--model", tiny_dir, "--max-new-tokens", 2)
    assert result.exit_code == 0
    assert [line for line in result.stderr.splitlines() if line.startswith("Warning")] == [
        f"Warning: ignoring the tuned settings in {Path(os.environ['LONGLM_CACHE_DIR']) / 'tuned.json'}: "
        "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    ]
    expected, _, _ = reference_answer(tiny_dir, "ask", CORPUS, "Who?", max_new_tokens=2)
    assert result.stdout == expected + "\n"


def test_an_unusable_cache_directory_gives_no_tuned_warning(tiny_dir, tmp_path, monkeypatch):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    monkeypatch.setenv("LONGLM_CACHE_DIR", str(loop))
    assert find_tuned(model_key(str(tiny_dir)), 1000) is None  # no file there: nothing to say


def test_negative_and_64_bit_seeds_are_accepted(tiny_dir, tmp_path):
    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)
    for seed in (-1, 2**64 - 1):
        result = run("ask", doc, "Who?", "--model", tiny_dir, "--max-new-tokens", 2, "--temperature", 1, "--seed", seed)
        assert result.exit_code == 0, result.output


def _lying_files(key: str, N: int) -> dict:
    good = {"model": key, "length": N, "method": "selfextend", "window": 16, "group_size": 24}
    return {
        "wrong types": {key: {str(N): {**good, "window": "16", "scores": "many", "label": 3}}},
        "not a mapping": {key: {str(N): [1, 2, 3]}},
        "deep nesting": "[" * 100_000 + "]" * 100_000,
        "huge lengths": {key: {str(N): {**good, "length": 10**400, "window": 10**30}}},
        "infinite scale base": {key: {str(N): {**good, "scale_base": float("inf")}}},
        "not finite scores": {key: {str(N): {**good, "scores": {"x": float("nan")}}}},
        "a list": [good],
        "a link to /dev/zero": None,
    }


@pytest.mark.parametrize("case", list(_lying_files("k", 1)))
def test_a_lying_tuned_file_is_ignored_and_later_runs_work(tiny_dir, tmp_path, case):
    """Every command that reads tuned.json goes on as without it: at most one warning, never a traceback or a
    hang, and the file breaks no later run."""
    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)
    args = ("ask", doc, "Who?", "--model", tiny_dir, "--max-new-tokens", 2)
    N = json.loads(run(*args, "--json").stdout)["plan"]["N"]
    path = Path(os.environ["LONGLM_CACHE_DIR"]) / "tuned.json"
    content = _lying_files(model_key(str(tiny_dir)), N)[case]
    if content is None:
        if not Path("/dev/zero").exists():
            pytest.skip("no /dev/zero on this platform")
        path.symlink_to("/dev/zero")
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    expected, _, _ = reference_answer(tiny_dir, "ask", CORPUS, "Who?", max_new_tokens=2)
    for result in (run(*args), run(*args), run("plan", "--model", tiny_dir, "--length", N)):
        assert result.exit_code == 0, result.output
        assert "Traceback" not in result.output and result.stderr.count("Warning") <= 1
    assert run(*args).stdout == expected + "\n"
    untouched = json.loads(run("plan", "--model", tiny_dir, "--length", N, "--json").stdout)
    assert untouched["tuned"] is None


@pytest.mark.parametrize("case", ["wrong types", "not a mapping", "huge lengths", "infinite scale base"])
def test_entries_longlm_did_not_write_are_skipped_with_one_warning(tiny_dir, capsys, case):
    key = model_key(str(tiny_dir))
    path = Path(os.environ["LONGLM_CACHE_DIR"]) / "tuned.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_lying_files(key, 1000)[case]))
    assert find_tuned(key, 1000) is None
    assert capsys.readouterr().err == (
        f"Warning: ignoring the tuned settings in {path}: 1 entry for this model longlm did not write\n"
    )
