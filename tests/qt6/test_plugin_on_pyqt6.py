"""The plugin under PyQt6, as QGIS 4 runs it: every module imports (module-level Qt code runs
against real PyQt6), and every Qt name the code spells (`Qt.CheckState.Checked`,
`QMetaType.Type.QString`, `QDialog.DialogCode.Accepted`...) exists in PyQt6. Run in a venv with
PyQt6 and no QGIS (`make test-qt6`); QGIS's own names are checked on 3.40 in tests/plugin."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

PyQt6 = pytest.importorskip("PyQt6", reason="PyQt6 is not installed: `make test-qt6` makes a venv with it")

from tests.qt6 import qgis_stand_in  # noqa: E402
from tests.qt6.spelling import attribute_chains, fallback_nodes, imports_from  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "qgis_plugin"
MODULES = sorted(path.stem for path in PLUGIN.glob("*.py"))


@pytest.fixture(scope="module", autouse=True)
def stand_in():
    saved = {name: module for name, module in sys.modules.items() if name == "qgis" or name.startswith(("qgis.", "qgis_plugin"))}
    qgis_stand_in.install()
    yield
    for name in [n for n in sys.modules if n == "qgis" or n.startswith(("qgis.", "qgis_plugin"))]:
        del sys.modules[name]
    sys.modules.update(saved)


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports_under_pyqt6(module):
    importlib.import_module(f"qgis_plugin.{module}")


def qt_names(path: Path) -> list[tuple[int, str, str, list[str]]]:
    """(line, module, root name, attribute chain) of every name imported from qgis.PyQt and every
    chain rooted at one (imports in `except` handlers are another Qt's fallback: left out)."""
    tree = ast.parse(path.read_text(), str(path))
    imported = list(imports_from(tree, ("qgis.PyQt.",), fallback_nodes(tree)))
    roots = {local: module.removeprefix("qgis.PyQt.") for _, module, _, local in imported}
    names = [(line, module.removeprefix("qgis.PyQt."), name, []) for line, module, name, _ in imported]
    return names + [(line, roots[root], root, parts) for line, root, parts in attribute_chains(tree) if root in roots]


def missing_in_pyqt6(path: Path) -> list[str]:
    problems = []
    for line, module, root, parts in qt_names(path):
        value = importlib.import_module(f"PyQt6.{module}")
        spelled = root
        for part in [root, *parts]:
            if not hasattr(value, part):
                problems.append(f"{path.name}:{line}: {spelled if part != root else root} has no '{part}' in PyQt6.{module}")
                break
            value = getattr(value, part)
            spelled = spelled if part == root else f"{spelled}.{part}"
    return problems


def test_every_qt_name_exists_in_pyqt6():
    problems = [problem for path in sorted(PLUGIN.glob("*.py")) for problem in missing_in_pyqt6(path)]
    assert not problems, "\n".join(problems)


def test_the_name_check_finds_what_pyqt6_lacks(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from qgis.PyQt.QtCore import Qt, QRegExp\nfrom qgis.PyQt.QtWidgets import QDialog\n"
        "a = Qt.AlignLeft\nb = QDialog.Accepted\nok = (Qt.AlignmentFlag.AlignLeft, QDialog.DialogCode.Accepted)\n"
        "try:\n    from qgis.PyQt.QtGui import QAction\nexcept ImportError:\n    from qgis.PyQt.QtWidgets import QAction\n"
    )
    assert sorted(p.split(":", 2)[1] + ":" + p.split("'")[1] for p in missing_in_pyqt6(sample)) == ["1:QRegExp", "3:AlignLeft", "4:Accepted"]
