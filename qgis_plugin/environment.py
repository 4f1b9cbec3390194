"""The environment a child Python of the backend gets (its service, its installer): the user's,
without what QGIS set for its own Python, GDAL and PROJ, which would load QGIS's numpy and GDAL
into the backend's environment. Standard library only: the headless installer imports it."""

from __future__ import annotations

STRIPPED_NAMES = {
    "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "PYTHONUSERBASE", "VIRTUAL_ENV",
    "LD_LIBRARY_PATH", "LD_PRELOAD", "DYLD_LIBRARY_PATH", "DYLD_FALLBACK_LIBRARY_PATH", "DYLD_FRAMEWORK_PATH",
    "PROJ_LIB", "PROJ_DATA", "PROJ_NETWORK", "QT_PLUGIN_PATH", "QT_QPA_PLATFORM_PLUGIN_PATH",
}  # fmt: skip
STRIPPED_PREFIXES = ("GDAL_", "CPL_", "OGR_", "QGIS_", "PYQGIS_", "OSGEO4W", "GEOTIFF_", "GISBASE")


def clean_environment(environment: dict[str, str]) -> dict[str, str]:
    """The environment without what QGIS set for its own Python, GDAL and PROJ."""
    return {
        name: value
        for name, value in environment.items()
        if name.upper() not in STRIPPED_NAMES and not name.upper().startswith(STRIPPED_PREFIXES)
    }
