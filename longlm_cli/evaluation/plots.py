"""The PNG of an evaluation run: score against length per method for every task, and for needle tasks the
depth x length heatmap of each method (needles binned by depth).

matplotlib is optional (``pip install 'longlm-cli[plot]'``) and imported only here, with its file-only backend.
The numbers drawn are returned too, so that tests check what a figure shows without reading pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

DEPTH_BINS = 5  # needle depths 0-0.2, ..., 0.8-1 (each sample draws its own depth)


@dataclass(frozen=True)
class Curve:
    task: str
    method: str
    lengths: tuple[int, ...]
    scores: tuple[float | None, ...]  # mean score x 100 at each length; None where nothing ran


@dataclass(frozen=True)
class Heatmap:
    task: str
    method: str
    lengths: tuple[int, ...]
    cells: tuple[tuple[float | None, ...], ...]  # [depth bin][length] mean score x 100


def _mean(values: list[float]) -> float | None:
    return 100 * sum(values) / len(values) if values else None


def curves(records: list[dict], *, tasks, lengths, methods) -> list[Curve]:
    """Score against length, one curve per task and method (methods with no record for a task are left out)."""
    found = []
    for task in tasks:
        for method in methods:
            at = [r for r in records if r["task"] == task and r["method"] == method]
            if at:
                scores = tuple(_mean([r["score"] for r in at if r["length"] == n]) for n in lengths)
                found.append(Curve(task, method, tuple(lengths), scores))
    return found


def heatmaps(records: list[dict], *, tasks, lengths, methods) -> list[Heatmap]:
    """Depth bin x length for every needle task and method that has records with a depth."""
    found = []
    for task in tasks:
        for method in methods:
            at = [r for r in records if r["task"] == task and r["method"] == method and r.get("depth") is not None]
            if not at:
                continue
            cells = tuple(
                tuple(
                    _mean([r["score"] for r in at if r["length"] == n and _depth_bin(r["depth"]) == b]) for n in lengths
                )
                for b in range(DEPTH_BINS)
            )
            found.append(Heatmap(task, method, tuple(lengths), cells))
    return found


def _depth_bin(depth: float) -> int:
    return min(DEPTH_BINS - 1, int(depth * DEPTH_BINS))


def plot_grid(records: list[dict], path: Path, *, tasks, lengths, methods, title: str):
    """Write the run's PNG to ``path``; return (curves, heatmaps) as drawn."""
    drawn = curves(records, tasks=tasks, lengths=lengths, methods=methods)
    maps = heatmaps(records, tasks=tasks, lengths=lengths, methods=methods)
    plt = _pyplot()
    columns = max(1, min(4, len(tasks)))
    curve_rows = -(-len(tasks) // columns)
    map_columns = max(1, len(methods))
    map_tasks = list(dict.fromkeys(m.task for m in maps))
    rows = curve_rows + len(map_tasks)
    figure = plt.figure(figsize=(4 * max(columns, map_columns), 3.2 * max(1, rows)), layout="constrained")
    grid = figure.add_gridspec(max(1, rows), columns * map_columns)
    for i, task in enumerate(tasks):
        ax = figure.add_subplot(grid[i // columns, (i % columns) * map_columns : (i % columns + 1) * map_columns])
        for curve in (c for c in drawn if c.task == task):
            points = [(n, s) for n, s in zip(curve.lengths, curve.scores) if s is not None]
            ax.plot([n for n, _ in points], [s for _, s in points], marker="o", label=curve.method)
        ax.set(title=task, xlabel="tokens", ylabel="score x 100", ylim=(-5, 105), xscale="log", xticks=list(lengths))
        ax.minorticks_off()  # a log axis would label its own minor ticks over the lengths
        ax.set_xticklabels([f"{n // 1024}k" if n % 1024 == 0 else str(n) for n in lengths])
        ax.legend(fontsize="small")
    for row, task in enumerate(map_tasks, start=curve_rows):
        for col, heat in enumerate(m for m in maps if m.task == task):
            ax = figure.add_subplot(grid[row, col * columns : (col + 1) * columns])
            values = [[float("nan") if v is None else v for v in line] for line in heat.cells]
            ax.imshow(values, vmin=0, vmax=100, cmap="RdYlGn", aspect="auto", origin="upper")
            ax.set(title=f"{task}: {heat.method}", xlabel="tokens", ylabel="needle depth")
            ax.set_xticks(range(len(lengths)), [f"{n:,}" for n in lengths])
            ax.set_yticks(range(DEPTH_BINS), [f"{b / DEPTH_BINS:.1f}-{(b + 1) / DEPTH_BINS:.1f}" for b in range(5)])
    figure.suptitle(title)
    try:
        figure.savefig(path, dpi=100)
    except OSError as exc:
        raise InputError(f"cannot write the plot {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(figure)
    return drawn, maps


def check_plotting(path: Path) -> None:
    """Refuse before any work a plot that could not be drawn or written at the end."""
    from .results import check_writable

    _pyplot()
    check_writable(path, option="--plot")


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise InputError("--plot needs matplotlib: pip install 'longlm-cli[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
