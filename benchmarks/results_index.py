#!/usr/bin/env python
"""Write docs/results-index.md: every file under benchmarks/results/, with the date of the commit that last
changed it, the pages of docs/ (and the README) that cite it, and the command and machine those pages give
beside it (the sentence that names the file).

Usage: python benchmarks/results_index.py   (run from a git checkout; rewrites docs/results-index.md)
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
OUT = ROOT / "docs" / "results-index.md"
PAGES = [ROOT / "README.md", *(p for p in sorted((ROOT / "docs").glob("*.md")) if p.name != OUT.name)]
COMMAND = re.compile(r"`((?:OMP_NUM_THREADS=\d+ )?(?:python|longlm|bash)[^`]*)`")
MACHINE = re.compile(r"machine [AB]\b|avx512_bf16|\bAMX\b|AVX2|Intel Xeon|AMD EPYC")


def last_change(path: Path) -> str:
    done = subprocess.run(
        ["git", "log", "-1", "--format=%cs", "--", str(path.relative_to(ROOT))],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() or "not committed"


def citations(name: str) -> list[tuple[Path, str]]:
    """(page, the paragraph naming ``name``) for every page that names the file."""
    found = []
    for page in PAGES:
        for paragraph in re.split(r"\n\s*\n", page.read_text(encoding="utf-8")):
            if name in paragraph:
                found.append((page, " ".join(paragraph.split())))
    return found


def row(path: Path) -> str:
    name = str(path.relative_to(RESULTS))
    cited = citations(name)
    pages = ", ".join(sorted({f"[{p.name}]({_link(p)})" for p, _ in cited})) or "not cited"
    commands = sorted({c for _, text in cited for c in COMMAND.findall(text)})
    machines = sorted({m.strip() for _, text in cited for m in MACHINE.findall(text)}) or recorded_machines(path)
    command = "<br>".join(f"`{c}`" for c in commands[:3]) or "see the page"
    return f"| `{name}` | {last_change(path)} | {pages} | {command} | {', '.join(machines) or 'not recorded'} |"


def recorded_machines(path: Path) -> list[str]:
    """The machines a results file records itself: the ``machine`` field of its JSON records, else the machine
    words of its text, else those of the message of the commit that added it."""
    text = path.read_text(encoding="utf-8", errors="replace")
    found = {m.group(1) for m in re.finditer(r'"machine":\s*"([^"]+)"', text)}
    found |= set(MACHINE.findall(text))
    if not found:
        done = subprocess.run(
            ["git", "log", "--diff-filter=A", "--format=%B", "--", str(path.relative_to(ROOT))],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        found = set(MACHINE.findall(done.stdout))
    return sorted(f"{m} (recorded)" for m in found)


def _link(page: Path) -> str:
    return "../README.md" if page.name == "README.md" else page.name


def main() -> None:
    files = sorted(p for p in RESULTS.rglob("*") if p.is_file())
    lines = [
        "# Index of the results files",
        "",
        "Written by `python benchmarks/results_index.py`: each file under `benchmarks/results/`, the date of the",
        "commit that last changed it, the pages that cite it, and the commands and machines named in the",
        "paragraphs that cite it (the page itself says which command made which figure); where those name no",
        'machine, the machines the file records itself (or the commit that added it), marked "recorded".',
        "",
        "| file | last changed | cited in | command | machine |",
        "|---|---|---|---|---|",
        *(row(p) for p in files),
    ]
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{OUT.relative_to(ROOT)}: {len(files)} files")


if __name__ == "__main__":
    main()
