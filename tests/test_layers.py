"""The layers keep their shape: the protocol package does no I/O; what a person reads is
written only in the UI layer (the three front ends `cli/`, `tui/` and `web/`, and
`wording/`, the sentences more than one of them says), which library code never imports;
the chat and web apps take shared sentences from `wording/`, never from the CLI or from
each other; and no module of GhostLine imports itself round a circle. (The relay's
blindness has its own test: tests/relay/test_relay_blindness.py.)"""

from __future__ import annotations

import ast
from pathlib import Path

import ghostline

SRC = Path(ghostline.__file__).parent
# What would let protocol/ reach a disk, a socket, the clock or randomness.
IO_MODULES = frozenset(
    {"asyncio", "sqlite3", "mmap", "socket", "os", "pathlib", "time", "threading",
     "subprocess", "random", "secrets", "ssl", "shutil", "tempfile", "io", "select"}
)  # fmt: skip
# The packages that alone write what a person reads. The front ends sit side by side;
# `wording` sits below them all and holds what more than one of them says.
FRONT_ENDS = ("ghostline.cli", "ghostline.tui", "ghostline.web")
UI_LAYER = (*FRONT_ENDS, "ghostline.wording")
# Entry points that only hand over to the CLI.
ENTRY_POINTS = frozenset({"ghostline.__main__"})


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in it (under TYPE_CHECKING and inside
    functions too), as absolute dotted names; `from X import a` names X.a as well."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def ghostline_modules() -> dict[str, Path]:
    return {module_name(p): p for p in SRC.rglob("*.py")}


def test_the_protocol_package_imports_no_io_and_nothing_above_it() -> None:
    files = sorted((SRC / "protocol").glob("*.py"))
    assert len(files) >= 8
    for path in files:
        for name in imports(path):
            top = name.split(".")[0]
            assert top not in IO_MODULES, f"{path.name} imports {name}"
            if top == "ghostline":
                assert name.startswith(("ghostline.protocol", "ghostline.errors")), (
                    f"{path.name} imports {name}"
                )


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_the_chat_and_web_apps_take_shared_sentences_from_wording_not_from_the_cli() -> None:
    files = sorted((SRC / "tui").rglob("*.py")) + sorted((SRC / "web").rglob("*.py"))
    assert len(files) >= 15
    for path in files:
        upward = sorted(n for n in imports(path) if within(n, ("ghostline.cli",)))
        assert not upward, (
            f"{path.relative_to(SRC)} imports {upward}: a sentence the apps share with the "
            "CLI belongs in ghostline/wording/"
        )


def test_the_chat_app_and_the_web_app_import_nothing_of_each_other() -> None:
    for app, sibling in (("tui", "ghostline.web"), ("web", "ghostline.tui")):
        files = sorted((SRC / app).rglob("*.py"))
        assert len(files) >= 8
        for path in files:
            across = sorted(n for n in imports(path) if within(n, (sibling,)))
            assert not across, (
                f"{path.relative_to(SRC)} imports {across}: what both apps say belongs in "
                "ghostline/wording/"
            )


def test_the_shared_wording_imports_no_front_end() -> None:
    files = sorted((SRC / "wording").glob("*.py"))
    assert len(files) >= 2
    for path in files:
        upward = sorted(n for n in imports(path) if within(n, FRONT_ENDS))
        assert not upward, f"wording/{path.name} imports {upward}"


def test_library_code_imports_nothing_of_the_ui_layer() -> None:
    library = {
        mod: path
        for mod, path in ghostline_modules().items()
        if not within(mod, UI_LAYER) and mod not in ENTRY_POINTS
    }
    assert {"ghostline.state.member", "ghostline.client.client", "ghostline.relay.server"} <= set(
        library
    )
    for mod, path in library.items():
        upward = sorted(n for n in imports(path) if within(n, UI_LAYER))
        assert not upward, f"{mod} imports {upward}: what a person reads is the UI layer's"


def test_no_module_imports_itself_round_a_circle() -> None:
    modules = ghostline_modules()

    def owner(name: str) -> str | None:
        """The module `name` is (or is defined in)."""
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {
        mod: {dep for name in imports(path) if (dep := owner(name)) and dep != mod}
        for mod, path in modules.items()
    }
    # A package's __init__ re-exporting its modules is no circle: the edge from a
    # module up to its own package's __init__ is left out.
    for mod, deps in graph.items():
        deps.difference_update(d for d in list(deps) if mod.startswith(d + "."))
    cycles = strongly_connected(graph)
    assert not cycles, f"import cycles: {cycles}"


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The components of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
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
    return found


def test_the_cycle_finder_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []
