"""The import graph of das, teachers and the entry points keeps its layers (docs: DESIGN "Layers").

The graph is built from the source with :mod:`ast`, so nothing is imported to check it: every
``import`` and ``from ... import`` statement counts, at the top of a file or inside a function
(an import deferred into a function is still a dependency, only a later one). Relative imports
are resolved, and ``from package import name`` is an edge to ``package.name`` when that is a
module of the repository, else to the package's ``__init__``. Imports under
``if TYPE_CHECKING:`` run no code (annotations only), so they cannot close a circle at run time
and the circle check leaves them out; they still say which way a dependency runs, so the layer
check counts them. The parent packages a dotted import runs implicitly are not edges: a package
``__init__`` that re-exports its modules would otherwise sit in a circle with every one of them.

Two rules hold: no circle between files, and no import from a lower layer to a higher one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The packages and top-level modules checked, by directory or file under the repository root.
SOURCES = ("das", "teachers", "search.py", "train.py", "prune.py")

GROUND, BLOCKS, WORKFLOWS, ENTRY = 0, 1, 2, 3
LAYER_NAMES = {GROUND: "ground", BLOCKS: "building blocks", WORKFLOWS: "workflows", ENTRY: "entry points"}

#: The layer of every package and module, by the longest matching dotted prefix. Imports run
#: only to the same layer or a lower one.
LAYERS: dict[str, int] = {
    # ground: plain data and helpers that import nothing of das above them
    "das.errors": GROUND,
    "das.registry": GROUND,
    "das.spec": GROUND,  # builds through the builder das.spaces hands it (das.spec.set_builder), never imports them
    "das.features": GROUND,
    "das.stats": GROUND,
    "das.paths": GROUND,
    "das.importing": GROUND,  # package.module:function specs, for every registry that takes them
    "das.relations": GROUND,  # sample-relation matrices: the DisWOT proxy's and the relation loss's
    "das.cli": GROUND,  # command-line helpers shared by the entry points and the workflows' commands
    "das.evaluate": GROUND,  # top-1 accuracy of any module on any batches: torch only
    "das.inputs": GROUND,  # does a network run on images of this size: torch only, for search.py and train.py
    # building blocks: networks, data, proxies, spaces, teachers and what combines them
    "das": BLOCKS,  # das/__init__.py alone: importing das loads the built-in spaces (see das.spec)
    "das.nets": BLOCKS,  # network code shared by teachers, spaces, proxies and pruning: the bottom block
    "teachers": BLOCKS,
    "das.data": BLOCKS,
    "das.proxies": BLOCKS,
    "das.spaces": BLOCKS,
    "das.storage": BLOCKS,  # an Optuna storage from one string: the search's, and das.models' to read a leaderboard
    "das.report": BLOCKS,  # scoring reports over data, proxies and teachers; used by search and calibrate
    # das.models turns one string into a network (an architecture of a space, a teacher, a
    # network file) and every workflow uses it, so it is the top building block, below the
    # workflows; it is a registry of model sources and imports no workflow.
    "das.models": BLOCKS,
    # workflows
    "das.distill": WORKFLOWS,
    "das.prune": WORKFLOWS,
    "das.calibrate": WORKFLOWS,
    "das.search": WORKFLOWS,
    "das.tune": WORKFLOWS,
    # entry points
    "search": ENTRY,
    "train": ENTRY,
    "prune": ENTRY,
}

#: Entries of LAYERS that name one module only, not the modules under it: every module of das
#: has its own entry, so a new one cannot slip into a layer unseen.
EXACT_ONLY = frozenset({"das"})

#: Within the building blocks and within the workflows, the packages of the same layer each
#: package may import. Network code (das.nets) is the bottom block; a workflow that needs another's
#: piece uses a finished one (prune distils its result); anything else shared moves down.
SIDEWAYS_USES: dict[str, frozenset[str]] = {
    "das": frozenset({"das.spaces"}),
    "das.nets": frozenset(),
    "teachers": frozenset({"das.nets"}),
    "das.spaces": frozenset({"das.nets"}),
    "das.data": frozenset(),
    "das.proxies": frozenset({"das.nets"}),
    "das.storage": frozenset(),
    "das.report": frozenset({"das.data", "das.proxies", "teachers"}),
    "das.models": frozenset({"das.nets", "das.spaces", "das.storage", "teachers"}),
    "das.distill": frozenset(),
    "das.prune": frozenset({"das.distill"}),
    "das.calibrate": frozenset({"das.distill"}),
    "das.search": frozenset({"das.distill", "das.calibrate"}),
    # train.py's recipe study: short distillations on the population trainer, on a study shared as search.py's is
    "das.tune": frozenset({"das.distill", "das.calibrate", "das.search"}),
}

#: Lower packages a package must not import although the layers allow it: the distillation
#: losses share DisWOT's relation matrices through das.relations, not through the proxies.
KEPT_APART: dict[str, frozenset[str]] = {
    "das.distill": frozenset({"das.proxies"}),
}



def module_files(root: Path = ROOT, sources: Iterable[str] = SOURCES) -> dict[str, Path]:
    """Every module of ``sources`` by dotted name (a package by its own name, for its __init__)."""
    found: dict[str, Path] = {}
    for source in sources:
        path = root / source
        files = [path] if path.is_file() else sorted(path.rglob("*.py"))
        for file in files:
            parts = list(file.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = file
    return found


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _nodes(tree: ast.AST, type_checking: bool) -> Iterable[ast.AST]:
    """Every node of ``tree``; without ``type_checking``, none under ``if TYPE_CHECKING:`` (type checkers' imports)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if type_checking or not _type_checking_only(child):
                todo.append(child)


def _imported(tree: ast.AST, name: str, is_package: bool, modules: Mapping[str, Path], type_checking: bool) -> set[str]:
    """The repository modules that the parsed module ``name`` imports."""
    package = name if is_package else name.rpartition(".")[0]
    targets: set[str] = set()

    def known(dotted: str) -> str | None:
        while dotted and dotted not in modules:  # ``import a.b.c`` of a name inside a.b → a.b
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    for node in _nodes(tree, type_checking):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if target := known(alias.name):
                    targets.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                target = known(f"{source}.{alias.name}") if f"{source}.{alias.name}" in modules else known(source)
                if target:
                    targets.add(target)
    targets.discard(name)
    return targets


def import_graph(root: Path = ROOT, sources: Iterable[str] = SOURCES, type_checking: bool = False) -> dict[str, set[str]]:
    """Each module's imports of other modules of ``sources``, by dotted name (``type_checking``: with type-only ones)."""
    modules = module_files(root, sources)
    graph = {}
    for name, file in modules.items():
        tree = ast.parse(file.read_text(), filename=str(file))
        graph[name] = _imported(tree, name, file.name == "__init__.py", modules, type_checking)
    return graph


def circles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def layer_of(module: str) -> tuple[str, int]:
    """The entry of :data:`LAYERS` that holds ``module`` and its layer."""
    dotted = module
    while dotted not in LAYERS or (dotted in EXACT_ONLY and dotted != module):
        if "." not in dotted:
            raise KeyError(f"{module} has no layer: add it or its package to LAYERS in tests/test_layers.py")
        dotted = dotted.rpartition(".")[0]
    return dotted, LAYERS[dotted]


def upward_imports(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """Every import that runs to a higher layer, sideways where SIDEWAYS_USES does not allow it, or across KEPT_APART."""
    wrong = []
    for module, imports in sorted(graph.items()):
        room, layer = layer_of(module)
        for target in sorted(imports):
            target_room, target_layer = layer_of(target)
            if target_layer > layer:
                wrong.append(f"{module} ({LAYER_NAMES[layer]}) imports {target} ({LAYER_NAMES[target_layer]})")
            elif layer == target_layer and layer in (BLOCKS, WORKFLOWS) and target_room != room and target_room not in SIDEWAYS_USES[room]:
                wrong.append(f"{module} ({room}) imports {target}: sideways, {room} may use only {sorted(SIDEWAYS_USES[room])} of its layer")
            elif target_room in KEPT_APART.get(room, ()):
                wrong.append(f"{module} ({room}) imports {target}: {room} is kept apart from {target_room}")
    return wrong


def _file(module: str, modules: Mapping[str, Path]) -> str:
    return modules[module].relative_to(ROOT).as_posix()


def test_no_import_circle_between_files() -> None:
    modules = module_files()
    # type-only imports count too: a circle a type checker must untangle is still two rooms leaning on each other
    found = [frozenset(_file(m, modules) for m in group) for group in circles(import_graph(type_checking=True))]
    new = [sorted(group) for group in found]
    assert not new, "import circles between files: " + "; ".join(" <-> ".join(group) for group in new)


def test_no_import_runs_up_a_layer() -> None:
    wrong = upward_imports(import_graph(type_checking=True))
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_every_module_has_a_layer() -> None:
    for module in module_files():
        room, layer = layer_of(module)
        assert layer in (GROUND, ENTRY) or room in SIDEWAYS_USES, f"add {room} to SIDEWAYS_USES in tests/test_layers.py"


def test_circle_finder_on_a_synthetic_graph() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"f"}, "f": {"e"}, "g": set()}
    assert circles(graph) == [["a", "b", "c"], ["e", "f"]]
    assert circles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("deferred", [False, True])
def test_graph_sees_relative_deferred_and_module_imports(tmp_path: Path, deferred: bool) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    indent = "def f():\n    " if deferred else ""
    (pkg / "sub" / "one.py").write_text(f"{indent}from .. import two\n")
    (pkg / "two.py").write_text(f"{indent}from pkg.sub import one\n")
    (pkg / "three.py").write_text(
        "from typing import TYPE_CHECKING\nimport pkg.sub.one\nfrom . import two as _two\nif TYPE_CHECKING:\n    from pkg import four\n"
    )
    (pkg / "four.py").write_text("")
    graph = import_graph(tmp_path, ["pkg"])
    assert graph["pkg.sub.one"] == {"pkg.two"} and graph["pkg.two"] == {"pkg.sub.one"}
    assert graph["pkg.three"] == {"pkg.sub.one", "pkg.two"}
    assert circles(graph) == [["pkg.sub.one", "pkg.two"]]
    assert import_graph(tmp_path, ["pkg"], type_checking=True)["pkg.three"] == {"pkg.sub.one", "pkg.two", "pkg.four"}


def test_an_upward_import_is_reported() -> None:
    assert upward_imports({"das.spec": {"das.spaces"}, "das.spaces": set()}) == [
        "das.spec (ground) imports das.spaces (building blocks)"
    ]
    assert upward_imports({"das.distill.module": {"das.prune.masks"}, "das.prune.masks": set()})  # sideways
    assert upward_imports({"das.spaces.nb201": {"teachers.cifar_resnet"}, "teachers.cifar_resnet": set()})
    assert upward_imports({"das.distill.losses": {"das.proxies.diswot"}, "das.proxies.diswot": set()})
