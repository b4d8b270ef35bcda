"""One error hierarchy for the whole core.

Every error a user can cause derives from :class:`FastUNetError`; subclasses also inherit the matching
builtin (``ValueError``, ``OSError`` ...) so callers may catch either. Messages are written for the user:
they say what is wrong and what to do next, in one line. The CLI prints them without a traceback. A broken
internal invariant (a bug of ours, not the user's doing) raises a plain ``RuntimeError`` instead.

Warnings are typed too (subclasses of :class:`FastUNetWarning`), so a caller filters them by class, never
by their text.
"""

from __future__ import annotations


class FastUNetError(Exception):
    """Root of all fastunet-geo errors."""


class InputRasterError(FastUNetError, ValueError):
    """The input raster cannot be used (missing, unreadable, not georeferenced, wrong bands...)."""


class CheckpointError(FastUNetError, ValueError):
    """A checkpoint file is missing, corrupt, or does not describe a model we can build."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint would need unpickling (arbitrary code execution); it is refused unread."""


class UnknownArchitectureError(CheckpointError, KeyError):
    """An architecture name is not in the registry."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class ConfigError(FastUNetError, ValueError):
    """An option or configuration value is invalid."""


class DatasetLayoutError(FastUNetError, ValueError):
    """A training data folder or file does not have the expected layout (what was expected, what was found)."""


class DeviceError(FastUNetError, RuntimeError):
    """The requested compute device cannot be used."""


class GPUMemoryError(DeviceError, MemoryError):
    """The GPU ran out of memory even at the smallest setting; the message says what to lower."""


class HostMemoryError(FastUNetError, MemoryError):
    """The machine ran out of memory (RAM) for a setting the user chose; the message says what to lower."""


class OutputExistsError(FastUNetError, FileExistsError):
    """The output exists and overwriting was not allowed."""


class OutputWriteError(FastUNetError, OSError):
    """The output could not be written."""


class OutputLimitError(OutputWriteError):
    """The output would exceed what its file format can hold (e.g. a Shapefile's 2 GB)."""


class WorkerError(FastUNetError, RuntimeError):
    """A worker process stopped without an answer (killed, crashed, out of memory)."""


class NonFiniteError(FastUNetError, ArithmeticError):
    """NaN or infinite values where numbers must be finite: a diverging training run, a model's output."""


class CancelledError(FastUNetError):
    """The user cancelled the run; nothing was written."""


class FastUNetWarning(UserWarning):
    """Something the user should know about that does not stop the run."""


class EmptyInputWarning(FastUNetWarning):
    """The input holds no valid pixel; the output is all nodata."""


class DtypeMismatchWarning(FastUNetWarning):
    """The raster's data type differs from the one the model was trained on."""


class ResolutionMismatchWarning(FastUNetWarning):
    """The raster's ground resolution is far from the one the model was trained at."""


class GPUMemoryWarning(FastUNetWarning):
    """The GPU ran out of memory; the run continues with smaller batches."""


class EmptyPolygonsWarning(FastUNetWarning):
    """Vectorising found no polygon of the selected classes; the output holds none."""


class UnreadableClassesWarning(FastUNetWarning):
    """A class raster's CLASSES tag cannot be read; classes are named by id."""


class InProcessWorkersWarning(FastUNetWarning):
    """Worker processes cannot be started here (no Python interpreter); the work runs in this process."""


class KeptStyleWarning(FastUNetWarning):
    """An existing style file beside an output was kept, not replaced."""


class InputRangeWarning(FastUNetWarning):
    """The input's values lie largely outside the value range the model scales to its input."""
