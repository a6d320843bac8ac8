"""The PNG of an evaluation run: the numbers drawn, the file written, and its faults caught before any work."""

import json
import sys

import pytest

from longlm_cli.errors import InputError
from longlm_cli.evaluation import plots

from helpers import run


def _record(task, method, length, score, depth=None):
    return {"task": task, "method": method, "length": length, "score": score, "depth": depth}


RECORDS = [
    _record("niah_single_2", "none", 4096, 1.0, 0.1),
    _record("niah_single_2", "none", 4096, 0.0, 0.9),
    _record("niah_single_2", "none", 16384, 0.0, 0.5),
    _record("niah_single_2", "selfextend", 16384, 1.0, 0.55),
    _record("niah_single_2", "selfextend", 16384, 0.0, 0.95),
    _record("qa_1", "none", 4096, 0.5),
    _record("qa_1", "selfextend", 16384, 0.25),
]
ARGS = {"tasks": ("niah_single_2", "qa_1"), "lengths": (4096, 16384), "methods": ("none", "selfextend")}


def test_curves_are_the_mean_scores_per_length():
    assert plots.curves(RECORDS, **ARGS) == [
        plots.Curve("niah_single_2", "none", (4096, 16384), (50.0, 0.0)),
        plots.Curve("niah_single_2", "selfextend", (4096, 16384), (None, 50.0)),
        plots.Curve("qa_1", "none", (4096, 16384), (50.0, None)),
        plots.Curve("qa_1", "selfextend", (4096, 16384), (None, 25.0)),
    ]


def test_heatmaps_bin_needles_by_depth_for_needle_tasks_only():
    none, extended = plots.heatmaps(RECORDS, **ARGS)
    assert (none.task, none.method, extended.method) == ("niah_single_2", "none", "selfextend")
    assert none.cells == ((100.0, None), (None, None), (None, 0.0), (None, None), (0.0, None))
    assert extended.cells == ((None, None), (None, None), (None, 100.0), (None, None), (None, 0.0))


def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "run.png"
    drawn, maps = plots.plot_grid(RECORDS, path, title="test", **ARGS)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and len(drawn) == 4 and len(maps) == 2


def test_without_matplotlib_the_plot_is_refused_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(InputError, match=r"^--plot needs matplotlib: pip install 'longlm-cli\[plot\]'$"):
        plots.check_plotting(tmp_path / "x.png")


def test_eval_plot_to_a_missing_directory_fails_before_any_work(tiny_dir, tmp_path):
    results = tmp_path / "r.jsonl"
    bad = tmp_path / "nowhere" / "run.png"
    result = run("eval", "--model", tiny_dir, "--tasks", "vt", "--results", results, "--plot", bad)
    assert result.exit_code == 1 and not results.exists()
    assert result.stderr == f"Error: --plot {bad}: the directory {bad.parent} does not exist\n"


def test_eval_writes_its_plot(tiny_dir, tmp_path):
    results, png = tmp_path / "r.jsonl", tmp_path / "run.png"
    args = ("--tasks", "niah_single_1", "--lengths", "1000", "--samples", "1", "--methods", "none,selfextend")
    result = run("eval", "--model", tiny_dir, *args, "--results", results, "--plot", png)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[-1] == f"Plot written to {png}"
    assert png.read_bytes()[:4] == b"\x89PNG" and len(results.read_text().splitlines()) == 2
    assert all(json.loads(line)["depth"] is not None for line in results.read_text().splitlines())
