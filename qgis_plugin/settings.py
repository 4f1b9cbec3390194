"""The plugin's settings: one QgsSettings prefix, read into a plain object and written back.

The backend is either started by the plugin as a child process ("local") or reached at a URL
with a token ("remote"). A local backend that was started outside QGIS (`rscovlm serve`) is
found through the server file it writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from qgis.core import QgsApplication, QgsSettings

PREFIX = "rscovlm/"
QUANTIZE_CHOICES = ("none", "8bit", "4bit")
DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")
ZOOM_CHOICES = ("auto", "on", "off")


def default_server_file() -> str:
    """Where `rscovlm serve` writes its URL and token (the backend's security.config_dir)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return str(Path(base) / "rscovlm" / "server.json")


def plugin_data_folder() -> Path:
    """`rscovlm` in the QGIS profile folder: the backend and the models by default, never inside
    the plugin's own folder (QGIS replaces it on update)."""
    return Path(QgsApplication.qgisSettingsDirPath()) / "rscovlm"


@dataclass
class PluginSettings:
    mode: str = "local"  # "local": a child process or a running `rscovlm serve`; "remote": url + token
    command: str = "rscovlm"  # the backend's `rscovlm` command, or the Python of its environment
    model: str = ""
    adapter: str = ""
    quantize: str = "none"
    device: str = "auto"
    batch_size: int = 4
    server_file: str = ""  # empty: the default server file
    url: str = "http://127.0.0.1:8000"
    token: str = ""
    upload_rasters: bool = False  # also to a backend on this machine (a container that cannot read our paths)
    timeout_s: int = 30  # one HTTP request, not a whole job
    poll_interval_ms: int = 500
    tile_size: int = 0  # 0: the model's own (the tile it was trained on)
    gsd: float = 0.0  # 0: native
    zoom: str = "auto"
    backend_folder: str = ""  # where Install backend... builds the environment; empty: in the QGIS profile folder
    models_folder: str = ""  # the local backend's models folder (serve --models-dir); empty: in the QGIS profile folder

    @classmethod
    def load(cls) -> PluginSettings:
        stored = QgsSettings()
        values = {}
        for field in fields(cls):
            default = getattr(cls, field.name)
            value = stored.value(PREFIX + field.name, default)
            try:
                if isinstance(default, bool):  # INI files give back 'true' / 'false'
                    values[field.name] = str(value).lower() in ("true", "1")
                else:
                    values[field.name] = type(default)(value)
            except (TypeError, ValueError):
                values[field.name] = default
        return cls(**values)

    def save(self) -> None:
        stored = QgsSettings()
        for field in fields(self):
            stored.setValue(PREFIX + field.name, getattr(self, field.name))

    def models_path(self) -> Path:
        """Where the local backend keeps its models (the Models list, downloads, a bundle's
        models): one folder the user can move, beside the backend by default."""
        return Path(self.models_folder) if self.models_folder else plugin_data_folder() / "models"

    def server_file_path(self) -> str:
        return self.server_file or default_server_file()

    def redacted(self) -> dict:
        """For diagnostics: everything but the token's value."""
        values = {field.name: getattr(self, field.name) for field in fields(self)}
        values["token"] = "(set)" if self.token else "(empty)"
        return values
