"""Services raise, views map: nothing but a urls.py imports a views module (issue #9.1)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPS = ["ai_chat", "api_manager", "core", "dashboard", "users", "bsepar_panel"]


def _ours(module: str) -> bool:
    """A module of the project (Django's own views may be imported anywhere)."""
    return module.split(".")[0] in APPS


def _imports_views(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _ours(node.module or ""):
            module = node.module or ""
            if module.endswith("views") or any(alias.name == "views" for alias in node.names):
                found.append(module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if _ours(a.name) and a.name.endswith(".views")]
    return found


def test_only_url_modules_import_views():
    offenders = {}
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if path.name == "urls.py" or "migrations" in path.parts:
                continue
            found = _imports_views(ast.parse(path.read_text(), str(path)))
            if found:
                offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}
