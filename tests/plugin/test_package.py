"""`make package` builds a zip that follows the plugins.qgis.org rules, and QGIS can load the
plugin from it as installed (its own folder name, its own resources)."""

from __future__ import annotations

import configparser
import importlib
import sys
import zipfile

import pytest
from qgis.core import QgsApplication

from .conftest import REPO

REQUIRED_METADATA = ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email", "repository")
RECOMMENDED_METADATA = ("qgisMaximumVersion", "tracker", "homepage", "category", "icon", "tags", "experimental", "hasProcessingProvider")


@pytest.fixture(scope="module")
def package(plugin_zip):
    return plugin_zip


def metadata_of(archive: zipfile.ZipFile) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read_string(archive.read("rscovlm_qgis/metadata.txt").decode("utf-8"))
    return parser["general"]


def test_zip_follows_the_plugin_repository_rules(package):
    assert package.stat().st_size < 25 * 2**20
    with zipfile.ZipFile(package) as archive:
        names = archive.namelist()
        assert archive.testzip() is None
        tops = {name.split("/")[0] for name in names}
        assert tops == {"rscovlm_qgis"} and "rscovlm_qgis".isidentifier()
        assert not [n for n in names if n.endswith((".pyc", ".pyo", ".so", ".pyd")) or "__pycache__" in n or "/." in n]
        assert "Apache License" in archive.read("rscovlm_qgis/LICENSE").decode()
        metadata = metadata_of(archive)
        for field in REQUIRED_METADATA + RECOMMENDED_METADATA:
            assert metadata.get(field, "").strip(), f"metadata.txt lacks {field}"
        assert metadata["qgisMinimumVersion"] == "3.40" and metadata["qgisMaximumVersion"] == "4.99" and metadata["supportsQt6"] == "True"
        assert f"rscovlm_qgis/{metadata['icon']}" in names
        assert metadata["repository"].startswith("https://")
        sources = sorted(p.name for p in (REPO / "qgis_plugin").glob("*.py"))
        assert sorted(n.split("/")[-1] for n in names if n.count("/") == 1 and n.endswith(".py")) == sources
        assert f"rscovlm_qgis/backend_wheel/rscovlm_qgis-{metadata['version']}-py3-none-any.whl" in names  # Install backend... installs it
        for style in ("detections", "grounding", "zoom", "answer"):
            assert f"rscovlm_qgis/resources/styles/{style}.qml" in names
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'version = "{metadata["version"]}"' in pyproject and 'license = { text = "Apache-2.0" }' in pyproject


def test_the_installed_plugin_loads_from_the_zip(package, tmp_path, qgis_iface):
    with zipfile.ZipFile(package) as archive:
        archive.extractall(tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        installed = importlib.import_module("rscovlm_qgis")
        assert installed.__file__.startswith(str(tmp_path))
        from rscovlm_qgis.resources import RESOURCES, style_path

        assert RESOURCES == tmp_path / "rscovlm_qgis" / "resources" and style_path("detections").is_file()
        plugin = installed.classFactory(qgis_iface)
        plugin.initGui()
        assert QgsApplication.processingRegistry().providerById("rscovlm") is not None
        plugin.unload()
        assert QgsApplication.processingRegistry().providerById("rscovlm") is None
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == "rscovlm_qgis" or n.startswith("rscovlm_qgis.")]:
            del sys.modules[name]


def test_the_suite_runs_on_the_oldest_qgis_the_plugin_claims():
    """metadata.txt may only claim a QGIS these tests ran on: `make test` installs 3.40 LTR from
    bookworm-backports where Debian's own is older, and this says which one ran."""
    from qgis.core import Qgis

    metadata = configparser.ConfigParser()
    metadata.read(REPO / "metadata.txt", encoding="utf-8")
    major, minor = (int(part) for part in metadata["general"]["qgisMinimumVersion"].split("."))
    assert Qgis.QGIS_VERSION_INT >= major * 10000 + minor * 100, f"the tests run on QGIS {Qgis.QGIS_VERSION}, older than the {major}.{minor} claimed"
    assert Qgis.QGIS_VERSION_INT < major * 10000 + (minor + 2) * 100, f"QGIS {Qgis.QGIS_VERSION}: the oldest claimed ({major}.{minor}) is not what runs"
