"""QGIS 4 (Qt6) readiness that QGIS 3.40 itself can show: every enum value of Qt and QGIS is
named through its enum (Qt6 and QGIS 4 have scoped enums only) and by the enum's own name, not
by a deprecated alias (QgsWkbTypes.GeometryType is Qgis.GeometryType now); no PyQt5-only calls.
What PyQt6 itself accepts is checked in tests/qt6 (`make test-qt6`)."""

from __future__ import annotations

import ast
import enum
import importlib
from pathlib import Path

from tests.qt6.spelling import attribute_chains, imports_from

PLUGIN = Path(__file__).resolve().parents[2] / "qgis_plugin"
ROOTS = ("qgis.core", "qgis.gui", "qgis.PyQt.")


def imported_names(tree: ast.Module) -> dict[str, object]:
    """Names bound by `from qgis.core import X` and the like, resolved in this QGIS."""
    names = {}
    for _, module_name, name, local in imports_from(tree, ROOTS):
        module = importlib.import_module(module_name)
        if hasattr(module, name):
            names[local] = getattr(module, name)
    return names


def is_enum_type(value) -> bool:
    """A Qt/sip enum class (int subclass nested in a class) or a Python enum."""
    return isinstance(value, type) and (issubclass(value, enum.Enum) or (issubclass(value, int) and "." in value.__qualname__))


def enum_problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    known = imported_names(tree)
    problems = []
    for line, root, parts in attribute_chains(tree):
        if root not in known:
            continue
        parent, spelled = known[root], root
        for part in parts:
            child = getattr(parent, part, None)
            if child is None:
                break
            spelled += f".{part}"
            kind = type(child)
            if is_enum_type(kind) and kind is not parent:
                problems.append(f"{path.name}:{line}: {spelled} is not scoped: write {kind.__qualname__}.{part}")
                break
            if is_enum_type(child) and spelled != child.__qualname__:
                problems.append(f"{path.name}:{line}: {spelled} is an alias of {child.__qualname__}: use that name")
                break
            parent = child
    return problems


def test_every_enum_is_named_through_its_own_enum():
    problems = [problem for path in sorted(PLUGIN.glob("*.py")) for problem in enum_problems(path)]
    assert not problems, "\n".join(problems)


def test_no_pyqt5_only_spellings():
    """exec_() and QVariant types are gone in PyQt6; Qt only through qgis.PyQt."""
    for path in sorted(PLUGIN.glob("*.py")):
        text = path.read_text()
        assert ".exec_(" not in text, path.name
        assert "QVariant" not in text, path.name
        assert "from PyQt5" not in text and "import PyQt5" not in text, path.name


def test_the_checker_sees_what_it_must(tmp_path):
    """The rules above find the spellings they exist for (so a silent checker cannot pass)."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from qgis.core import QgsTask, QgsWkbTypes, Qgis\nfrom qgis.PyQt.QtCore import Qt\n"
        "a = QgsTask.CanCancel\nb = Qt.AlignLeft\nc = QgsWkbTypes.GeometryType.PolygonGeometry\n"
        "ok = (QgsTask.Flag.CanCancel, Qt.AlignmentFlag.AlignLeft, Qgis.GeometryType.Polygon)\n"
    )
    found = enum_problems(sample)
    assert [problem.split(":")[1] for problem in found] == ["3", "4", "5"], found
