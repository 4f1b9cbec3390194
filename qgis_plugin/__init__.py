"""RSCoVLM for QGIS: ask a remote-sensing vision-language model about a raster layer and get
the answers as map layers. The model runs in a separate backend process (`rscovlm serve`);
this package runs in QGIS's own Python and imports only qgis, qgis.PyQt and the standard library."""


def classFactory(iface):  # noqa: N802 - the name QGIS looks for
    from .plugin import RSCoVLMPlugin

    return RSCoVLMPlugin(iface)
