"""The package's seams: imports point one way, and no module reaches into another's privates."""

from __future__ import annotations

import ast
import pathlib

import tx_swoole

ROOT = pathlib.Path(tx_swoole.__file__).parent

# Twisted's own privates, used on purpose in one place (the write-through transport), and
# os._exit and sys._current_frames (documented, public despite their names).
ALLOWED_PRIVATE = {
    ("tx_swoole.transport", "_tempDataLen"),
    ("tx_swoole.transport", "_writeDisconnected"),
    ("tx_swoole.transport", "_fromListeningDescriptor"),
    ("tx_swoole.transport", "_fromConnectedSocket"),  # Twisted's adoptStreamConnection's own
    ("tx_swoole.transport", "_shouldShutdown"),
    ("tx_swoole.process._lifecycle", "_exit"),
    ("tx_swoole.process.watchdog", "_current_frames"),
}


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def import_graph(mods: dict[str, ast.Module]) -> dict[str, set[str]]:
    """Every import of a tx_swoole module, also under TYPE_CHECKING and inside functions."""
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, tree in mods.items():
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            graph[name].update(t for t in targets if t in mods and t not in (name, "tx_swoole"))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_anywhere() -> None:
    mods = modules()
    assert "tx_swoole.clients.redis" in mods and "tx_swoole.protocols.http" in mods
    assert cycles(import_graph(mods)) == []


def test_process_modules_do_not_import_tap() -> None:
    graph = import_graph(modules())
    offenders = [m for m, deps in graph.items() if m.startswith("tx_swoole.process") and
                 "tx_swoole.tap" in deps]  # fmt: skip
    assert offenders == []


def defined(tree: ast.Module) -> set[str]:
    """Names a module defines: functions, classes, attributes, globals, slots."""
    own: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            own.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            own.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            own.add(node.value)  # __slots__ entries
    return own


def private_reaches(name: str, tree: ast.Module, elsewhere: set[str] | None = None) -> list[str]:
    """``x._name`` where ``x`` is not self/cls, unless only this module defines ``_name``
    (``elsewhere``: what the other modules define)."""
    own = defined(tree) - (elsewhere or set())
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        attr = node.attr
        if not attr.startswith("_") or attr.startswith("__") or attr in own:
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        call = node.value
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and (call.func.id == "super")
        ):
            continue  # a subclass calling what it extends: the same object
        if (name, attr) not in ALLOWED_PRIVATE:
            out.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    return out


def test_private_reach_finder_finds_one() -> None:
    tree = ast.parse("def f(pool):\n    return pool._check()\n")
    assert private_reaches("m", tree) == ["m:2: pool._check"]
    tree = ast.parse("class A:\n    def _own(self): pass\ndef f(a):\n    a._own()\n")
    assert private_reaches("m", tree) == []
    # a name this module defines but another does too: whose it is cannot be told
    assert private_reaches("m", tree, elsewhere={"_own"}) == ["m:4: a._own"]
    tree = ast.parse("class B(A):\n    def _x(self):\n        return super()._base()\n")
    assert private_reaches("m", tree) == []  # what a subclass extends is its own


def test_no_module_calls_another_modules_privates() -> None:
    mods = modules()
    names = {name: defined(tree) for name, tree in mods.items()}
    reaches = []
    for name, tree in mods.items():
        elsewhere = set().union(*(d for other, d in names.items() if other != name))
        reaches += private_reaches(name, tree, elsewhere)
    assert reaches == []


def test_pools_keep_no_instance_dict() -> None:
    """The pools have more attributes than an instance dict keeps inline (30 in Python 3.11);
    with a real dict no method call on them is specialized, so they have slots instead."""
    from twisted.internet import task

    from tx_swoole.clients.mysql import MySQLPool
    from tx_swoole.clients.redis import RedisPool

    for pool in (MySQLPool("127.0.0.1", 3306, reactor=task.Clock()),
                 RedisPool("127.0.0.1", 6379, reactor=task.Clock())):  # fmt: skip
        assert not hasattr(pool, "__dict__"), type(pool)
