"""The package's modules import each other without a circle: every import statement counts, also one inside a
function, so that a lazy import cannot hide a dependency that runs both ways."""
import ast
import os

from conftest import ROOT

PACKAGE = "recbole_genrec"


def package_modules():
    """{dotted module name: file path} of every module and package under recbole_genrec/."""
    modules = {}
    for folder, _, files in os.walk(os.path.join(ROOT, PACKAGE)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
                modules[dotted.removesuffix(".__init__")] = path
    return modules


def imported_modules(name, path, modules):
    """The package's modules that `name` imports (a `from X import y` names X.y when that is a module)."""

    def owner(dotted):
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted

    found, package = set(), name if path.endswith("__init__.py") else name.rpartition(".")[0]
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(owner(alias.name) for alias in node.names if alias.name.startswith(PACKAGE))
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            source = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
            if source.startswith(PACKAGE):
                found.update(owner(f"{source}.{alias.name}") for alias in node.names)
    return found - {name, ""}


def circles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
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

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_walk_sees_imports_of_every_kind():
    graph = {name: imported_modules(name, path, package_modules()) for name, path in package_modules().items()}
    assert "recbole_genrec.trainer" in graph["recbole_genrec.registry"]  # inside get_trainer
    assert "recbole_genrec.data" in graph["recbole_genrec.quick_start"]  # from recbole_genrec.data import ...
    assert "recbole_genrec.compat" in graph["recbole_genrec"]  # from recbole_genrec import compat
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle():
    modules = package_modules()
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    assert circles(graph) == []
