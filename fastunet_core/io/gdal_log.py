"""GDAL's warnings as debug lines: rasterio logs each GDAL ``CE_Warning`` at WARNING level.

Most are harmless remarks on a file that is read correctly all the same (``RowsPerStrip not defined ...
assuming all one strip``), and they would appear, raw, between a command's own lines. :class:`GdalWarningsToDebug`
is a filter for a log handler: it turns WARNING records of the ``rasterio`` loggers into DEBUG records, shown
only when the handler's owner asked for debug output. Errors (CE_Failure and worse) pass untouched; so do
Python warnings (``warnings.warn``, logged as ``py.warnings``) and our own messages.
"""

from __future__ import annotations

import logging


class GdalWarningsToDebug(logging.Filter):
    """Demote rasterio's WARNING records (GDAL's warnings) to DEBUG; keep them only when ``show_debug``."""

    def __init__(self, show_debug: bool) -> None:
        super().__init__()
        self.show_debug = show_debug

    def filter(self, record: logging.LogRecord) -> bool:
        """Pass every record but rasterio's warnings, which pass as DEBUG records when debug output is on."""
        if record.levelno != logging.WARNING or not (record.name == "rasterio" or record.name.startswith("rasterio.")):
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return self.show_debug
