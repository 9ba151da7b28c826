"""The house's boundaries: who may import whom, held by reading and by importing.

Each part is imported in a fresh interpreter (outside the repository, so only the installed
`mailworker` name resolves) and ``sys.modules`` is read afterwards; the import graph of
the source is read with ``ast`` for circles and upward imports.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mailworker
from mailworker import settings as settings_package
from mailworker import tasks as tasks_package

ROOT = Path(__file__).resolve().parent.parent
PARTS = ["settings", "store", "observe", "delivery", "feedback", "tasks", "worker", "dev", "cli"]
# What each part may import besides itself (and the front door's mailworker.errors).
MAY_IMPORT = {
    "settings": set(),
    "store": {"settings"},
    "observe": {"settings"},
    "delivery": {"settings", "store", "observe"},
    "feedback": {"settings", "store", "observe", "delivery"},
    "tasks": {"settings", "store", "observe"},
    "worker": {"settings", "store", "observe", "delivery", "feedback", "tasks"},
    "dev": {"settings", "store", "observe", "delivery", "tasks", "worker"},
    "cli": {"settings", "store", "observe", "delivery", "feedback", "tasks", "worker", "dev"},
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules_of(part: str) -> list[str]:
    return [
        f"mailworker.{part}" + ("" if path.stem == "__init__" else f".{path.stem}")
        for path in sorted((ROOT / part).glob("*.py"))
        if path.stem != "__main__"
    ]


def _loaded_after(code: str, tmp_path: Path) -> set[str]:
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    run = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    return set(json.loads(run.stdout.strip().splitlines()[-1]))


def _under(modules: set[str], *prefixes: str) -> set[str]:
    return {m for m in modules if m.split(".")[0] in prefixes or m.startswith(prefixes)}


def test_the_producer_api_loads_no_smtp_and_no_worker(tmp_path: Path) -> None:
    loaded = _loaded_after("from mailworker import send_email, status\nsend_email.name", tmp_path)
    assert _under(loaded, "aiosmtplib") == set()
    assert _under(loaded, "mailworker.worker", "mailworker.delivery", "mailworker.cli") == set()


def test_the_delivery_core_loads_no_celery_or_kombu(tmp_path: Path) -> None:
    imports = "\n".join(f"import {m}" for m in _modules_of("delivery"))
    loaded = _loaded_after(imports, tmp_path)
    assert _under(loaded, "celery", "kombu") == set()
    assert _under(loaded, "mailworker.tasks", "mailworker.worker") == set()


@pytest.mark.parametrize("part", ["settings", "store", "observe"])
def test_the_ground_floor_loads_neither_celery_nor_smtp(part: str, tmp_path: Path) -> None:
    loaded = _loaded_after("\n".join(f"import {m}" for m in _modules_of(part)), tmp_path)
    assert _under(loaded, "celery", "kombu", "aiosmtplib") == set()
    others = {f"mailworker.{p}" for p in PARTS} - {f"mailworker.{p}" for p in MAY_IMPORT[part]}
    assert _under(loaded, *(others - {f"mailworker.{part}"})) == set()


def test_nothing_but_mailworker_is_imported_from_the_repository(tmp_path: Path) -> None:
    everything = "\n".join(f"import {m}" for part in PARTS for m in _modules_of(part))
    loaded = _loaded_after(everything, tmp_path)
    assert {m.split(".")[0] for m in loaded} & set(PARTS) == set()


def _imports(path: Path) -> set[str]:
    """The mailworker parts a module imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found |= {name for name in names if name.startswith("mailworker.")}
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for part in PARTS:
        for path in sorted((ROOT / part).glob("*.py")):
            module = f"mailworker.{part}" + ("" if path.stem == "__init__" else f".{path.stem}")
            graph[module] = _imports(path)
    return graph


def test_no_part_imports_a_part_above_it() -> None:
    upward = [
        f"{module} -> {target}"
        for module, targets in _graph().items()
        for target in targets
        if target.split(".")[1]
        not in {module.split(".")[1], "errors", *MAY_IMPORT[module.split(".")[1]]}
    ]
    assert upward == []


def test_the_import_graph_has_no_circles() -> None:
    graph = _graph()
    known = set(graph)

    def resolve(target: str) -> str | None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    edges = {m: {t for t in map(resolve, targets) if t and t != m} for m, targets in graph.items()}
    # A package's __init__ that only hands names on is a face, not a room of its own.
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                circles.append(trail[trail.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    faces = {f"mailworker.{p}" for p in PARTS}
    assert [c for c in circles if not set(c) & faces] == []


def test_modules_and_functions_stay_small() -> None:
    too_long = []
    for part in PARTS:
        for path in (ROOT / part).glob("*.py"):
            text = path.read_text(encoding="utf-8")
            if text.count("\n") > MAX_MODULE_LINES:
                too_long.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        too_long.append(f"{path.relative_to(ROOT)}:{node.name}: {length} lines")
    assert too_long == []


@pytest.mark.parametrize("package", [mailworker, tasks_package, settings_package])
def test_public_names_match_all_and_the_readme(package: object) -> None:
    # The README and the documentation site (docs/) together document the public API.
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    readme = "\n".join(page.read_text(encoding="utf-8") for page in pages)
    exported = set(package.__all__)  # type: ignore[attr-defined]
    public = {
        name
        for name in dir(package)
        if not name.startswith("_")
        and not isinstance(getattr(package, name), type(sys))  # submodules are not API
        and name != "annotations"
    }
    assert public == exported
    undocumented = [name for name in exported if not re.search(rf"\b{name}\b", readme)]
    assert undocumented == []
