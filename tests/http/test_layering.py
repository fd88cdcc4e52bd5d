"""http/ is sans-IO: no module in it imports zmq, asyncio, threading or socket."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import zmqhttp.http

FORBIDDEN = frozenset({"zmq", "asyncio", "threading", "socket"})
PACKAGE = Path(zmqhttp.http.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))


def imported_roots(source: str) -> set[str]:
    """Top-level names of every module a source imports (also inside functions)."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and getattr(node.func, "id", getattr(node.func, "attr", "")) in
            {"__import__", "import_module"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            roots.add(node.args[0].value.split(".")[0])
    return roots


def test_the_package_has_modules() -> None:
    names = {path.name for path in MODULES}
    assert {"connection.py", "reader.py", "writer.py", "fields.py", "limits.py",
            "events.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_io_imports(path: Path) -> None:
    found = imported_roots(path.read_text(encoding="utf-8")) & FORBIDDEN
    assert not found, f"{path.name} imports {sorted(found)}"


@pytest.mark.parametrize(
    "source",
    [
        "import zmq",
        "import asyncio.events",
        "from threading import Lock",
        "def f():\n    import socket\n",
        "import importlib\nimportlib.import_module('zmq.asyncio')",
        "__import__('socket')",
    ],
)
def test_the_checker_catches_io_imports(source: str) -> None:
    assert imported_roots(source) & FORBIDDEN


def test_the_checker_ignores_relative_and_similar_names() -> None:
    assert not imported_roots("from . import socket\nimport zmqhttp.http\nimport asyncio_x\n") & (
        FORBIDDEN
    )
