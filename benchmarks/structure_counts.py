#!/usr/bin/env python
"""Counts of the package's shape at a git revision (issue 34's before/after): top-level modules of longlm_cli/
(with __init__), rooms (a top-level module or folder), the import arrows between rooms (as tests/test_structure.py
reads imports, those inside functions too), files and lines.

Usage: python benchmarks/structure_counts.py [REV ...]   (default: the working tree)
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def counts(package: Path) -> dict:
    modules = {}
    for path in package.rglob("*.py"):
        parts = ["longlm_cli", *path.relative_to(package).with_suffix("").parts]
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    arrows = set()
    for module, path in modules.items():
        base_package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = node.module or ""
            if node.level:
                kept = base_package.split(".")[: len(base_package.split(".")) - node.level + 1]
                base = ".".join(kept + ([base] if base else []))
            for alias in node.names:
                target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                if target in modules and room(target) != room(module):
                    arrows.add((room(module), room(target)))
    top = [m for m in modules if m.count(".") == 1 and modules[m].name != "__init__.py"]
    return {
        "top_level_modules": len(top) + 1,
        "rooms": len({room(m) for m in modules}),
        "arrows": len(arrows),
        "files": len(modules),
        "lines": sum(len(p.read_text(encoding="utf-8").splitlines()) for p in modules.values()),
    }


def at(rev: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", rev, "longlm_cli"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        return counts(Path(tmp) / "longlm_cli")


def main() -> None:
    for rev in sys.argv[1:] or [None]:
        found = counts(ROOT / "longlm_cli") if rev is None else at(rev)
        print(f"{rev or 'working tree'}: " + ", ".join(f"{k} {v}" for k, v in found.items()))


if __name__ == "__main__":
    main()
