"""Reporting an evaluation: one accuracy table per method (rows lengths, columns depths), and its JSON form."""

from __future__ import annotations

from ..defaults import JSON_VERSION

METHOD_TITLES = {
    "none": "plain model",
    "selfextend": "SelfExtend",
    "yarn": "YaRN (transformers rope_type yarn)",
    "dynamic": "dynamic NTK (transformers rope_type dynamic)",
    "dca": "Dual Chunk Attention",
}


def aligned(table: list[list[str]]) -> list[str]:
    """The rows of a text table, each column right-aligned to its widest cell, two spaces apart."""
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return ["  ".join(c.rjust(w) for c, w in zip(r, widths)).rstrip() for r in table]


def format_tables(records: list[dict], *, L: int, lengths, depths, methods, task: str, model: str) -> str:
    """One accuracy table per method: rows are lengths, columns depths, cells correct/cases."""
    blocks = [f"{task} retrieval on {model}, L={L:,}; cells are correct/cases"]
    for method in methods:
        rows = [r for r in records if r["method"] == method]
        header = ["length", *_setup_columns(method), *(f"d={d:g}" for d in depths), "all"]
        table = [header]
        plain = []
        for length in lengths:
            at = [r for r in rows if r["length"] == length]
            table.append([f"{length:,}", *_setup_cells(method, at), *_depth_cells(at, depths)])
            if method != "none" and at and not any(r.get("extended") for r in at):
                plain.append(length)
        lines = aligned(table)
        note = [f"  (length {', '.join(f'{n:,}' for n in plain)} fits in L: run as the plain model)"] if plain else []
        blocks.append("\n".join([f"{method}: {METHOD_TITLES.get(method, method)}", *lines, *note]))
    return "\n\n".join(blocks)


def _setup_columns(method: str) -> list[str]:
    if method == "selfextend":
        return ["W", "G"]
    if method in ("yarn", "dynamic"):
        return ["factor"]
    return []


def _setup_cells(method: str, at: list[dict]) -> list[str]:
    """The setting a method ran with at one length: W and G, or the scaling factor ('-' when none)."""
    if method == "selfextend":
        first = next((r for r in at if r.get("W") is not None), None)
        return [str(first["W"]), str(first["G"])] if first else ["-", "-"]
    if method in ("yarn", "dynamic"):
        first = next((r for r in at if r.get("factor") is not None), None)
        return [f"{first['factor']:g}"] if first else ["-"]
    return []


def _depth_cells(at: list[dict], depths) -> list[str]:
    """correct/cases per depth, then the percentage over all of them ('-' where nothing ran)."""
    cells = []
    for depth in depths:
        cell = [r for r in at if r["depth"] == depth]
        cells.append(f"{sum(bool(r['correct']) for r in cell)}/{len(cell)}" if cell else "-")
    hits = sum(bool(r["correct"]) for r in at)
    cells.append(f"{100 * hits / len(at):.0f}%" if at else "-")
    return cells


def evaluation_to_dict(evaluation, *, model: str) -> dict:
    s = evaluation.settings
    return {
        "version": JSON_VERSION,
        "model": model,
        "L": evaluation.L,
        "task": s.task,
        "lengths": list(s.lengths),
        "depths": list(s.depths),
        "trials": s.trials,
        "seed": s.seed,
        "methods": list(s.methods),
        "resumed": evaluation.resumed,
        "cases": evaluation.records,
    }


def format_grid(records: list[dict], *, tasks, lengths, methods, L: int, model: str) -> str:
    """One table per task, then their mean: rows are lengths, columns methods, cells RULER's score (0-100).

    The summary task also gets a table of its answers' repetition (repeated word 4-grams, 0-100). The mean is
    over RULER's tasks (not the summary task, which scores something else) and, per length, over only the
    samples that every method there has finished, so its columns compare the same cases; a method with fewer
    than half the cases of the most advanced one at a length is left out of that comparison ("running (n)").
    """
    blocks = [f"RULER on {model}, L={L:,}; cells are the mean score x 100 over the samples run (n)"]
    for task in (*tasks, "mean"):
        title = f"{task}:" if task != "mean" else "mean over the tasks, on the samples every method ran:"
        blocks.append(_grid_table(records, task, lengths, methods, "score", title))
        if task == "summary":
            title = "summary repetition (repeated word 4-grams x 100; lower is better):"
            blocks.append(_grid_table(records, task, lengths, methods, "repetition", title))
    return "\n\n".join(blocks)


def _grid_table(records, task, lengths, methods, field: str, title: str) -> str:
    table = [["length", *methods]]
    for length in lengths:
        row = [f"{length:,}"]
        ran = _cases_run(records, length, methods) if task == "mean" else {}
        most = max(map(len, ran.values()), default=0)
        compared = [cases for cases in ran.values() if 2 * len(cases) >= most]
        shared = set.intersection(*compared) if compared else set()
        for method in methods:
            if task == "mean" and method in ran and 2 * len(ran[method]) < most:
                row.append(f"running ({len(ran[method])})")
                continue
            cell = [
                r[field]
                for r in records
                if r["length"] == length
                and r["method"] == method
                and (r["task"] == task if task != "mean" else (r["task"], r.get("sample")) in shared)
                and r.get(field) is not None
            ]
            row.append(f"{100 * sum(cell) / len(cell):.1f} ({len(cell)})" if cell else "-")
        table.append(row)
    return "\n".join([title, *aligned(table)])


def _cases_run(records, length: int, methods) -> dict[str, set[tuple]]:
    """method -> the (task, sample) cases it has run at ``length`` (the summary task left out)."""
    ran: dict[str, set[tuple]] = {}
    for r in records:
        if r["length"] == length and r["method"] in methods and r["task"] != "summary":
            ran.setdefault(r["method"], set()).add((r["task"], r.get("sample")))
    return ran
