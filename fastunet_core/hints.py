"""How a message names a setting the user can change: a command-line flag, a QGIS control, or nothing.

Core messages say what to do next ("use a smaller tile size"), and the setting to change has another name in
each front end: ``--tile`` on the command line, *Tile size* in the QGIS dock and Processing dialog, and some
settings exist in one front end only (``--model-resolution``). So core code never writes a flag into a
message: it names the setting by its key in :data:`SETTINGS` through :func:`setting` (a setting every front
end has) or :func:`hint` (a clause that is left out where the front end has no such setting), and the front
end in charge of the current context (:func:`speaking`) chooses the words, when the message is made.

A setting that is a training configuration key (``data.tile_size``) is written on the command line as the
override the user types, ``data.tile_size=128``, and a flag as ``--tile 128``: a message's hint is pasted as is.

The command line is the default: it is the core's own front end, what library users read, and what runs in
threads and processes that the core starts itself. The QGIS plugin runs its engine calls inside
``speaking(its words)``.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from os import PathLike

# key -> (command-line flag, what the setting is, in plain words: used where a front end has no name for it)
SETTINGS: dict[str, tuple[str, str]] = {
    "tile": ("--tile", "the tile size"),
    "overlap": ("--overlap", "the tile overlap"),
    "batch_size": ("--batch-size", "the batch size"),
    "device": ("--device", "the device"),
    "bands": ("--bands", "the bands"),
    "resolution": ("--resolution", "the run resolution"),
    "output_grid": ("--output-grid", "the class raster's grid"),
    "simplify": ("--simplify", "the simplify tolerance"),
    "min_area": ("--min-area", "the minimum area"),
    "head": ("--head", "the output head"),
    "engine": ("--engine", "the inference engine"),
    "no_resume": ("--no-resume", "a fresh run that ignores earlier partial outputs"),
    "skip_existing": ("--skip-existing", "keeping the outputs that exist"),
    "output": ("output (-o)", "the class raster"),
    "probs": ("--probs", "the probability raster"),
    "model_resolution": ("--model-resolution", "the model's ground resolution"),
    "allow_no_crs": ("--allow-no-crs", "segmenting a raster without a CRS"),
    "model_classes": ("--model-classes", "the model's class names"),
    "train_output": ("--output", "the run folder"),
    "fresh": ("--fresh", "starting over"),
    "init_classes": ("--classes", "the class names"),
    "init_bands": ("--bands", "the bands"),
    "init_dtype": ("--dtype", "the data type"),
    "init_value_range": ("--value-range at init", "the model's input value range"),
    "train_value_range": ("input.value_range in training", "the training's input value range"),
    "rescale": ("gdal_translate -scale", "a rescaled copy of the raster"),
    "init_resolution": ("--resolution-m", "the model's ground resolution"),
    "segment_tool": ("'fastunet-geo predict'", "a segmentation"),
    # whole commands, typed as printed once the CAPITALS are replaced by the user's names
    "init_from": ("'fastunet-geo init --from MODEL --classes NAMES -o OUT.safetensors'",
                  "converting the model once with the command line"),
    "init_weights": ("'fastunet-geo init ARCH --classes NAMES --weights FILE -o OUT.safetensors'",
                     "wrapping the weights in a model file"),
    "agreement_tiles": ("'fastunet-geo init --from MODEL -o OUT.safetensors --agreement-tiles RASTER'",
                        "measuring bf16 agreement"),
    "arch_args": ("--arch-args", "the architecture's arguments"),
    "export_format": ("--format", "the export format"),
    "eval_data": ("--data", "the dataset folder"),
    "eval_config": ("--config", "the run configuration"),
    # training configuration keys (a dot in the key): the command line sets them in the YAML file or as overrides,
    # so a message gives them with a value in the override's syntax, ``optim.lr=0.0001`` (see CLI below)
    "optim.lr": ("optim.lr", "the learning rate"),
    "optim.epochs": ("optim.epochs", "the number of epochs"),
    "optim.batch_size": ("optim.batch_size", "the batch size"),
    "optim.micro_batch": ("optim.micro_batch", "the batch size"),
    "data.tile_size": ("data.tile_size", "the tile size"),
    "data.val_fraction": ("data.val_fraction", "the validation fraction"),
    "data.cache": ("data.cache", "the tile cache"),
    "model.architecture": ("model.architecture", "the architecture"),
}


@dataclass(frozen=True)
class FrontEnd:
    """A front end's words for the settings: key -> the name its user sees (no entry: it has no such setting)."""

    name: str
    names: Mapping[str, str]
    with_value: str = "{name} {value}"  # a setting and its value: ``--tile 448``
    # whether its text shows in a fixed-width font that keeps runs of spaces (a terminal), so that tables can
    # align columns with spaces; QGIS's logs are HTML or proportional: a table there is one line per row
    aligned_tables: bool = True
    # a setting whose value is written another way than ``with_value``: key -> its own form (an override's key=value)
    value_forms: Mapping[str, str] = field(default_factory=dict)

    def says(self, key: str) -> bool:
        """Return True when this front end has the setting ``key``."""
        return key in self.names

    def render(self, key: str, value: object = None) -> str:
        """Return how this front end names the setting (with ``value`` when given)."""
        if key not in SETTINGS:
            raise KeyError(f"unknown setting {key!r}; known: {', '.join(SETTINGS)}")
        name = self.names.get(key, SETTINGS[key][1])
        return name if value is None else self.value_forms.get(key, self.with_value).format(name=name, value=value)

    def render_any(self, key: str, values: Sequence[object]) -> str:
        """Return the setting with one of ``values`` to choose: ``--tile 64 or 128``.

        A setting with a form of its own repeats it for each value (``data.tile_size=64 or data.tile_size=128``):
        an override is typed whole, key and value in one word.
        """
        if key in self.value_forms:
            return " or ".join(self.render(key, v) for v in values)
        return self.render(key, " or ".join(str(v) for v in values))


CONFIG_KEYS = tuple(key for key in SETTINGS if "." in key)
"""The settings that are training configuration keys: on the command line, ``section.key=value`` overrides."""

CLI = FrontEnd("cli", {key: flag for key, (flag, _what) in SETTINGS.items()},
               value_forms={key: "{name}={value}" for key in CONFIG_KEYS})  # train ... data.tile_size=128
_current: ContextVar[FrontEnd] = ContextVar("fastunet_front_end", default=CLI)


@contextlib.contextmanager
def speaking(front_end: FrontEnd) -> Iterator[None]:
    """Make the messages built in this context (this thread) name settings in ``front_end``'s words."""
    token = _current.set(front_end)
    try:
        yield
    finally:
        _current.reset(token)


def current() -> FrontEnd:
    """Return the front end whose words messages use here."""
    return _current.get()


def setting(key: str, value: object = None) -> str:
    """Return the setting ``key`` as the current front end names it: ``--tile 448``, or ``'Tile size' 448``."""
    return _current.get().render(key, value)


def setting_any(key: str, values: Sequence[object]) -> str:
    """Return the setting ``key`` with a choice of ``values``, as the current front end writes it (see render_any)."""
    return _current.get().render_any(key, values)


def hint(template: str, *keys: str, value: object = None) -> str:
    """Return ``template`` with each ``{}`` filled by a setting's name, or "" where the front end lacks one.

    ``value`` goes with the single key: ``hint("; use e.g. {}", "tile", value=448)``.
    """
    front = _current.get()
    if not all(front.says(k) for k in keys):
        for k in keys:
            front.render(k)  # an unknown key is still a bug here
        return ""
    if value is not None and len(keys) != 1:
        raise ValueError("a hint's value goes with exactly one setting")
    return template.format(*(front.render(k, value) for k in keys))


def counted(n: int, noun: str, thousands: bool = False) -> str:
    """Return ``n`` and ``noun`` in the right number: ``1 tile``, ``25 tiles`` (``1,024 tiles`` with ``thousands``)."""
    number = f"{n:,}" if thousands else str(n)
    return f"{number} {noun if n == 1 else noun + 's'}"


def shell_path(path: str | PathLike[str]) -> str:
    """Return a file path for a command line a message proposes (``gdal_edit.py ... PATH``), typed as is.

    The path as the user gave it (with its folder, so the command works from where they ran ours), quoted
    for the shell where it has spaces or other special characters.
    """
    return shlex.quote(str(path))
