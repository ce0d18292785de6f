"""The layout's own rules: one home per query name, no cycles between modules, no app -> workers."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

from tests.helpers.common import ROOT

PACKAGES = ("app", "workers")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _top_level_imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """First-party modules a module imports when it is imported (not inside functions or
    TYPE_CHECKING blocks)."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    if full in modules:
                        out.add(full)
                    elif node.module in modules:
                        out.add(node.module)
            elif isinstance(node, ast.If | ast.Try):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    return out


def test_no_module_of_app_imports_workers() -> None:
    offenders = []
    for name, path in _modules().items():
        if not name.startswith("app"):
            continue
        for line in path.read_text().splitlines():
            if re.match(r"\s*(from|import) workers\b", line):
                offenders.append(f"{name}: {line.strip()}")
    assert offenders == []


def test_no_import_cycles_between_modules() -> None:
    modules = _modules()
    graph = {name: _top_level_imports(path, modules) - {name} for name, path in modules.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name)
    assert cycles == []


def _statements() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted((ROOT / "app" / "queries").glob("*.sql")):
        parts = re.split(r"^--\s*name:\s*([a-z0-9_]+)\s*$", path.read_text(), flags=re.MULTILINE)
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            found[f"{path.stem}.{name}"] = body
    return found


def test_no_query_name_is_defined_twice() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for key in _statements():
        module, name = key.split(".")
        where[name].append(module)
    assert {name: files for name, files in where.items() if len(files) > 1} == {}


def test_no_statement_is_written_twice() -> None:
    by_text: dict[str, list[str]] = defaultdict(list)
    for key, body in _statements().items():
        text = " ".join(line for line in body.splitlines() if not line.strip().startswith("--"))
        by_text[" ".join(text.split()).rstrip(";").lower()].append(key)
    assert [keys for keys in by_text.values() if len(keys) > 1] == []
