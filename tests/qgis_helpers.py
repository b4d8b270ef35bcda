"""Helpers for the QGIS tests: wait for tasks while QGIS's event loop runs, read layer facts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from qgis.core import QgsApplication, QgsProject


def wait_for(condition: Callable[[], bool], timeout: float = 90.0) -> None:
    """Process Qt events until ``condition()`` holds; fail after ``timeout`` seconds."""
    start = time.monotonic()
    while not condition():
        QgsApplication.processEvents()
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s")
        time.sleep(0.005)
    QgsApplication.processEvents()


def open_segment_dock(iface: object) -> Iterator[object]:
    """Yield a fresh dock for one test; then cancel its run, stop its engine process and empty the project."""
    from qgis_plugin.dock import SegmentDock

    iface.messageBar().clear_messages()  # type: ignore[attr-defined]
    widget = SegmentDock(iface)
    yield widget
    if widget.task is not None:
        widget.cancel_run()
        wait_for(lambda: widget.task is None)
    widget.shutdown()  # its engine process, if a test started one
    QgsProject.instance().removeAllMapLayers()
    widget.deleteLater()
    QgsApplication.processEvents()


def hold_after_progress(monkeypatch: object, task_class: type, above: float) -> threading.Event:
    """Hold ``task_class``'s worker, once its progress passes ``above`` percent, until the returned event is set.

    A test then changes the project mid-run without a race.
    """
    released = threading.Event()
    report = task_class.set_percent  # type: ignore[attr-defined]

    def held_report(self: object, percent: float) -> None:
        report(self, percent)
        if percent > above:
            released.wait(timeout=120)

    monkeypatch.setattr(task_class, "set_percent", held_report)  # type: ignore[attr-defined]
    return released
