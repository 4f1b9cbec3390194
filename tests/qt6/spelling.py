"""What a plugin module spells: the names it imports from a package and every attribute chain
rooted at a plain name (`QgsTask.Flag.CanCancel` -> 'QgsTask', ['Flag', 'CanCancel']). Pure
`ast`, so the Qt6 checks run both in QGIS's Python (tests/plugin) and beside PyQt6 (tests/qt6)."""

from __future__ import annotations

import ast
from collections.abc import Iterator


def fallback_nodes(tree: ast.Module) -> set[int]:
    """Nodes inside `except` handlers: the imports a module falls back on under another Qt."""
    return {id(node) for handler in ast.walk(tree) if isinstance(handler, ast.ExceptHandler) for node in ast.walk(handler)}


def imports_from(tree: ast.Module, prefixes: tuple[str, ...], skip: set[int] = frozenset()) -> Iterator[tuple[int, str, str, str]]:
    """(line, module, imported name, local name) of `from <prefix...> import X [as Y]`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(prefixes) and id(node) not in skip:
            for alias in node.names:
                yield node.lineno, node.module, alias.name, alias.asname or alias.name


def attribute_chains(tree: ast.Module) -> Iterator[tuple[int, str, list[str]]]:
    """(line, root name, attributes) of every outermost chain `a.b.c` rooted at a plain name."""
    inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in inner:
            parts, value = [], node
            while isinstance(value, ast.Attribute):
                parts.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name):
                yield node.lineno, value.id, list(reversed(parts))
