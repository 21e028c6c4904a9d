"""The project's import graph, read with `ast`: its circles between modules and between folders.

    .venv/bin/python -m scripts.import_graph

Every import counts, those inside functions and under TYPE_CHECKING included: a circle hidden
in a function is still a circle a reader has to hold in mind. Tests and scripts are left out.
Exits 1 when there is a circle.
"""

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("api", "bench", "core", "notifications", "pages", "project", "stack", "blogclient")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for path in REPO.rglob("*.py"):
        relative = path.relative_to(REPO)
        top = relative.parts[0] in PACKAGES or (relative.stem in PACKAGES and len(relative.parts) == 1)
        # Not ours: migrations, and virtualenvs (the bench's peer has one) or anything hidden.
        ours = "migrations" not in relative.parts and not any(part.startswith(".") for part in relative.parts)
        if top and ours:
            found[module_name(path)] = path
    return found


def graph() -> dict[str, set[str]]:
    """module -> the project modules it imports."""
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name and not (known[target].name == "__init__.py" and name.startswith(target)):
                    edges[name].add(target)
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def folder_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """folder -> the folders its modules import (the modules beside a package are its parent folder)."""
    known = modules()

    def folder(name: str) -> str:
        return name if known[name].name == "__init__.py" else name.rpartition(".")[0] or name

    folders: dict[str, set[str]] = {}
    for name, targets in edges.items():
        mine = folder(name)
        folders.setdefault(mine, set())
        for target in targets:
            theirs = folder(target)
            if theirs != mine:
                folders[mine].add(theirs)
    return folders


def main() -> int:
    edges = graph()
    module_circles = circles(edges)
    folder_circles = circles(folder_graph(edges))
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} imports")
    print(f"{len(module_circles)} circles between modules")
    for circle in module_circles:
        print("  " + " <-> ".join(circle))
    print(f"{len(folder_circles)} circles between folders")
    for circle in folder_circles:
        print("  " + " <-> ".join(circle))
    return 1 if module_circles or folder_circles else 0


if __name__ == "__main__":
    sys.exit(main())
