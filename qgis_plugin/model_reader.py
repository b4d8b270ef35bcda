"""A model's metadata read off the GUI thread when it needs the engine (ONNX files, smp folders).

A fastunet-geo checkpoint's metadata is read from its header on the GUI thread (plain file reads, instant:
:mod:`.model_header`). An ONNX model or an smp folder needs the engine's packages (onnx, safetensors); in the
QGIS executables that read is an engine call, a second or more (seconds while the engine process starts).
:func:`start_model_read` runs it on a Python thread, through the dock's kept engine process, and
:attr:`ModelReader.answered` carries the answer to the GUI thread with the request's number, so that the
dock can drop the answer to a model that is no longer chosen.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING

from qgis.PyQt.QtCore import QObject, pyqtSignal

if TYPE_CHECKING:
    from .engine_session import EngineSession


class ModelReader(QObject):
    """Carries the answers of background model reads to the GUI thread."""

    answered = pyqtSignal(int, object)  # (request number, the ModelMeta or the error's sentence)


def start_model_read(reader: ModelReader, number: int, path: str,
                     session: EngineSession | None = None) -> threading.Thread:
    """Read ``path``'s metadata on a daemon thread (in the engine); emit ``reader.answered(number, answer)``."""

    def work() -> None:
        from fastunet_core.errors import FastUNetError

        from .model_header import read_model_meta

        answer: object
        try:
            answer = read_model_meta(path, session)
        except FastUNetError as exc:
            answer = str(exc)
        except Exception as exc:  # the thread's boundary: the dock shows it
            answer = f"the model could not be read: {type(exc).__name__}: {exc}"
        with contextlib.suppress(RuntimeError):  # the dock (and the reader with it) was deleted meanwhile
            reader.answered.emit(number, answer)

    thread = threading.Thread(target=work, name="fastunet-model-read", daemon=True)
    thread.start()
    return thread
