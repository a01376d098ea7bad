"""The layers stay apart: front doors (HTTP routes, review pages, CLI) call use cases, use cases
never reach back into a front door or the API's schemas, the modules of app/ import each other
without a cycle, and the matcher library imports nothing of the service. Read from the source
with ast, so that a wrong import fails here before it fails a reader."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FRONT_DOORS = ("app.api", "app.web", "app.cli", "app.main", "app.__main__")
ABOVE_ALL = ("app.runtime", "app.models")
"""The service's assembly and the registry of every table: they may import anything."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def graph(package: str) -> dict[str, set[str]]:
    modules = {module_name(p): p for p in (ROOT / package).rglob("*.py")}
    return {
        name: {target for target in imports_of(path) if target in modules and target != name}
        for name, path in modules.items()
    }


def test_the_matcher_imports_nothing_of_the_service():
    offenders = {
        name: sorted(i for i in imports_of(p) if i == "app" or i.startswith("app."))
        for name, p in ((module_name(p), p) for p in (ROOT / "matcher").rglob("*.py"))
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_use_cases_never_import_a_front_door_or_an_api_schema():
    wrong = {
        name: sorted(t for t in targets if t.startswith(FRONT_DOORS) or t == "app.runtime" or t.endswith(".schemas"))
        for name, targets in graph("app").items()
        if not name.startswith(FRONT_DOORS) and not name.endswith(".schemas") and name not in ABOVE_ALL
    }
    assert {name: found for name, found in wrong.items() if found} == {}


@pytest.mark.parametrize("package", ["app", "matcher"])
def test_modules_import_each_other_without_a_cycle(package):
    edges = graph(package)
    visiting, done, cycles = [], set(), []

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            cycles.append([*visiting[visiting.index(name) :], name])
            return
        visiting.append(name)
        for target in sorted(edges.get(name, ())):
            visit(target)
        visiting.pop()
        done.add(name)

    for name in sorted(edges):
        visit(name)
    assert cycles == []


def test_front_doors_open_no_transaction_and_append_no_audit_event():
    """Only use cases do: a front door that did would skip them for its own callers."""
    sources = [p for p in (ROOT / "app").rglob("*.py") if module_name(p).startswith(FRONT_DOORS)]
    found = {
        module_name(p): [word for word in ("transaction(", "session.begin(", "audit.append(") if word in p.read_text()]
        for p in sources
    }
    assert {name: words for name, words in found.items() if words} == {}
