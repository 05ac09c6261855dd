"""The README's Python blocks name what exists: every import resolves, every called function or method of the
``semrec`` names they import exists and accepts the keyword arguments given (checked with ``inspect``, nothing
is run: the blocks train models)."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)


def check_block(code: str) -> list[str]:
    """What in ``code`` names nothing: missing imports, unknown attributes of imported modules or classes, keyword
    arguments a called function does not take. Returns one line per problem."""
    problems: list[str] = []
    names: dict[str, object] = {}
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "semrec":
            module = importlib.import_module(node.module)
            for alias in node.names:
                try:
                    names[alias.asname or alias.name] = getattr(module, alias.name)
                except AttributeError:
                    try:
                        names[alias.asname or alias.name] = importlib.import_module(f"{node.module}.{alias.name}")
                    except ImportError:
                        problems.append(f"from {node.module} import {alias.name}: no such name")

    def resolve(expr: ast.expr) -> object | None:
        if isinstance(expr, ast.Name):
            return names.get(expr.id)
        if isinstance(expr, ast.Attribute):
            owner = resolve(expr.value)
            if owner is None:
                return None
            if not hasattr(owner, expr.attr):
                problems.append(f"{ast.unparse(expr)}: {ast.unparse(expr.value)} has no attribute {expr.attr!r}")
                return None
            return getattr(owner, expr.attr)
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = resolve(node.func)
            if func is None or not callable(func):
                continue
            try:
                params = inspect.signature(func).parameters
            except (TypeError, ValueError):
                continue
            if any(p.kind is p.VAR_KEYWORD for p in params.values()):
                continue
            problems += [f"{ast.unparse(node.func)}(): no parameter {kw.arg!r}" for kw in node.keywords
                         if kw.arg is not None and kw.arg not in params]
    return problems


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 2 and any("from semrec import api" in block for block in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_names_what_exists(block):
    assert check_block(block) == []


def test_the_check_finds_wrong_names():
    code = ("from semrec import api\nfrom semrec.config import RunConfig, Nope\n"
            "api.train(RunConfig(model='x', epochs=3))\napi.fly()\napi.evaluate('r', exclude=True)\n")
    assert sorted(check_block(code)) == [
        "RunConfig(): no parameter 'epochs'",
        "api.evaluate(): no parameter 'exclude'",
        "api.fly: api has no attribute 'fly'",
        "from semrec.config import Nope: no such name",
    ]
