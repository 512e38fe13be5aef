"""Measure the package's structure: import cycles, upward imports, the largest files and functions.

Used for issue 17's before/after table. Reads the source with :mod:`ast` (nothing is imported), builds the
module-level import graph of ``cotam_llava`` (imports inside functions count too: they are dependencies all the
same) and prints:

* **cycles**: strongly connected components of more than one module (Tarjan), each listed once (imports under
  ``if TYPE_CHECKING:`` are annotations, not dependencies, and are not counted);
* **upward imports**: a module importing from a package above its own that is not the package root's public
  surface — e.g. ``codec/guidance/x.py`` importing ``cotam_llava.vision`` (a sibling of ``codec``) is sideways,
  but ``codec/*`` importing ``cotam_llava.cli`` is upward. The rooms' order is the layering in
  ``docs/architecture.md`` (:data:`LAYERS`): a module may import its own layer and any layer below it;
* the N largest files (lines) and functions (lines, including nested bodies).

Example::

    python eval/code_structure.py            # table on stdout
    python eval/code_structure.py --json out/structure.json
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "cotam_llava"

#: Rooms from the bottom up (docs/architecture.md). A module in layer k may import layers 0..k. The first match
#: of a module name's prefix decides its layer; modules not listed are the package's top level (layer 0 helpers).
LAYERS: list[tuple[str, ...]] = [
    ("cotam_llava.errors", "cotam_llava._config", "cotam_llava._compressai", "cotam_llava._transformers",
     "cotam_llava.imageio", "cotam_llava.shipped", "cotam_llava._autoregister"),
    ("cotam_llava.encoders",),
    ("cotam_llava.codec",),
    ("cotam_llava.vision",),
    ("cotam_llava.models", "cotam_llava.analysis", "cotam_llava.integrations"),
    ("cotam_llava.training", "cotam_llava.evaluation"),
    ("cotam_llava.serving",),
    ("cotam_llava.cli", "cotam_llava.__main__", "cotam_llava"),
]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int:
    best, best_len = len(LAYERS) - 1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, modules: set[str]) -> set[str]:
    module = module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                   for n in ast.walk(block)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:  # ``if TYPE_CHECKING:`` imports are for annotations, not a dependency
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = resolve(module, path.name == "__init__.py", node)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            # the longest known module that prefixes the target (``from .x import y`` may name a function y)
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != module and target.startswith(PACKAGE):
                found.add(target)
    if module in found:
        found.discard(module)
    return found


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def package_ancestors(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def measure(top: int = 5) -> dict:
    files = sorted((ROOT / PACKAGE).rglob("*.py"))
    modules = {module_name(p) for p in files}
    graph = {module_name(p): imports_of(p, modules) for p in files}
    # A package's __init__ importing its own submodules (and a submodule its package) is not a dependency
    # between rooms; it would make every package a "cycle" with its children.
    for module, targets in graph.items():
        graph[module] = {t for t in targets if t not in package_ancestors(module)
                         and module not in package_ancestors(t)}
    cycles = strongly_connected(graph)
    upward = sorted(
        (m, t) for m, targets in graph.items() for t in targets if layer_of(t) > layer_of(m)
    )
    sizes = sorted(((len(p.read_text(encoding="utf-8").splitlines()), module_name(p)) for p in files),
                   reverse=True)
    functions = []
    for p in files:
        tree = ast.parse(p.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - node.lineno + 1, f"{module_name(p)}.{node.name}"))
    functions.sort(reverse=True)
    return {
        "modules": len(modules),
        "cycles": cycles,
        "upward_imports": [f"{m} -> {t}" for m, t in upward],
        "largest_files": [{"module": m, "lines": n} for n, m in sizes[:top]],
        "largest_functions": [{"function": f, "lines": n} for n, f in functions[:top]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--top", type=int, default=5, help="how many of the largest files and functions to list")
    parser.add_argument("--json", type=Path, help="also write the measurement as JSON here")
    args = parser.parse_args(argv)
    result = measure(args.top)
    print(f"modules: {result['modules']}")
    print(f"import cycles: {len(result['cycles'])}")
    for cycle in result["cycles"]:
        print("  " + " <-> ".join(cycle))
    print(f"upward imports: {len(result['upward_imports'])}")
    for line in result["upward_imports"]:
        print("  " + line)
    print("largest files:")
    for row in result["largest_files"]:
        print(f"  {row['lines']:5d}  {row['module']}")
    print("largest functions:")
    for row in result["largest_functions"]:
        print(f"  {row['lines']:5d}  {row['function']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
