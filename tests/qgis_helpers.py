"""Helpers for the QGIS tests: wait for tasks while QGIS's event loop runs, read layer facts."""

from __future__ import annotations

import time
from collections.abc import Callable

from qgis.core import QgsApplication


def wait_for(condition: Callable[[], bool], timeout: float = 90.0) -> None:
    """Process Qt events until ``condition()`` holds; fail after ``timeout`` seconds."""
    start = time.monotonic()
    while not condition():
        QgsApplication.processEvents()
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s")
        time.sleep(0.005)
    QgsApplication.processEvents()
