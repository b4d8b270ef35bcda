"""Training configuration: typed dataclasses read from YAML, with ``section.key=value`` overrides.

Values are checked by pydantic against the dataclasses' annotations (types and bounds such as ``lr > 0``);
a wrong one is a :class:`ConfigError` naming the key, e.g. ``optim.epochs: ... (got 'abc')``. YAML is read
with numbers as YAML 1.2 reads them: PyYAML (YAML 1.1) takes ``1e-4`` for a string, we take it for 0.0001.

The defaults are the paper's set-up (Cai & Zhang): Adam (lr 1e-3, weight decay 1e-3), JDT loss with
alpha = beta = 1 and gamma = 1, ReduceLROnPlateau (min, patience 2, factor 0.5) on the validation loss,
early stopping after 5 epochs without improvement, at most 50 epochs, a logical batch of 8.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, TypeAdapter, ValidationError

from fastunet_core.errors import ConfigError, FastUNetError
from fastunet_core.hints import SETTINGS, setting
from fastunet_core.models.registry import check_tile_multiple, size_divisor
from fastunet_core.train.workers import resolve_workers


@dataclass
class ModelConfig:
    """Which architecture to train."""

    architecture: str = "unet_skinny"
    args: dict[str, Any] = field(default_factory=dict)  # constructor arguments (e.g. widths, encoder_weights)
    init_from: str | None = None  # start from this checkpoint's weights (fine-tuning)


@dataclass
class InputConfig:
    """How raw pixels become model input (stored in the checkpoint for prediction)."""

    bands: list[int] | None = None  # 1-based; default: all the dataset's bands
    value_range: list[float] | None = None  # default: the dtype's range (uint8 0..255, uint16 0..65535)
    mean: list[float] | None = None  # after scaling to 0..1; default 0
    std: list[float] | None = None  # default 1


@dataclass
class OptimConfig:
    """Optimiser, schedule and stopping."""

    epochs: Annotated[int, Field(ge=1)] = 50
    batch_size: Annotated[int, Field(ge=1)] = 8  # logical batch (one optimiser step)
    micro_batch: Annotated[int, Field(ge=1)] = 8  # images per forward pass (batch_size / micro_batch accumulations)
    lr: Annotated[float, Field(gt=0)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 1e-3
    plateau_patience: Annotated[int, Field(ge=0)] = 2
    plateau_factor: Annotated[float, Field(gt=0, lt=1)] = 0.5
    early_stop_patience: Annotated[int, Field(ge=1)] = 5
    amp: str = "auto"  # auto: bf16/fp16 autocast on CUDA, none on CPU; "none" turns it off
    max_batches_per_epoch: Annotated[int, Field(ge=1)] | None = None  # cap for quick runs
    num_workers: int | str = "auto"  # DataLoader worker processes; auto: usable cores minus one (kept alive)
    seed: int = 0


@dataclass
class LossConfig:
    """JDT loss settings."""

    alpha: Annotated[float, Field(ge=0)] = 1.0
    beta: Annotated[float, Field(ge=0)] = 1.0
    gamma: Annotated[float, Field(gt=0)] = 1.0
    smooth: Annotated[float, Field(ge=0)] = 1e-3
    log_loss: bool = False
    reduction: str = "batch"
    class_weights: list[Annotated[float, Field(ge=0)]] | None = None


@dataclass
class AugmentConfig:
    """Training-time augmentation."""

    enabled: bool = True
    # flips, rotations, colour jitter and normalisation on the GPU, batched after the copy (None: on with CUDA);
    # false: albumentations in the loader workers, as on a CPU
    on_device: bool | None = None


@dataclass
class TrainConfig:
    """A whole training run."""

    data: dict[str, Any]
    output: str = "runs/run"
    device: str = "auto"
    model: ModelConfig = field(default_factory=ModelConfig)
    input: InputConfig = field(default_factory=InputConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # stored in the checkpoint as the prediction default; None: an eighth of the tile (64 px at 512), at most 64 px
    tile_overlap_px: Annotated[int, Field(ge=0)] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a plain dict (for YAML and checkpoint metadata)."""
        return dataclasses.asdict(self)


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``1e-4``, ``1E5`` and ``.5e3`` are numbers, not strings."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)

_SECTIONS = {"model": ModelConfig, "input": InputConfig, "optim": OptimConfig, "loss": LossConfig,
             "augment": AugmentConfig}


def config_from_dict(d: Mapping[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig`, with an error naming any unknown key and the valid ones."""
    d = dict(d)
    if "data" not in d or not isinstance(d["data"], Mapping):
        raise ConfigError("the training config needs a 'data' section (kind, root, ...)")
    top = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - top)
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; valid: {sorted(top)}")
    kwargs: dict[str, Any] = {k: v for k, v in d.items() if k not in _SECTIONS}
    kwargs["data"] = dict(d["data"])
    for name, cls in _SECTIONS.items():
        section = d.get(name) or {}
        if not isinstance(section, Mapping):
            raise ConfigError(f"config section {name!r} must be a mapping, got {section!r}")
        valid = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(section) - valid)
        if bad:
            raise ConfigError(f"unknown key(s) {bad} in section {name!r}; valid: {sorted(valid)}")
        kwargs[name] = dict(section)
    cfg = _validate(kwargs)
    _check(cfg)
    return cfg


def _validate(d: Mapping[str, Any]) -> TrainConfig:
    """Check types and bounds with pydantic; the first problems become one line naming their keys."""
    try:
        return TypeAdapter(TrainConfig).validate_python(d)
    except ValidationError as exc:
        problems = []
        for err in exc.errors()[:3]:
            key = ".".join(str(part) for part in err["loc"])
            key = setting(key) if key in SETTINGS else key  # QGIS names its control ('Learning rate')
            problems.append(f"{key}: {err['msg'][:1].lower()}{err['msg'][1:]} (got {err['input']!r})")
        raise ConfigError("bad config value: " + "; ".join(problems)) from None


def _check(cfg: TrainConfig) -> None:
    o = cfg.optim
    if o.batch_size % o.micro_batch:
        fits = max(d for d in range(1, o.micro_batch) if o.batch_size % d == 0)
        raise ConfigError(f"optim.batch_size ({o.batch_size}) must be a positive multiple of optim.micro_batch "
                          f"({o.micro_batch}); use e.g. {setting('optim.micro_batch', fits)}")
    resolve_workers(o.num_workers)
    tile = cfg.data.get("tile_size", 512)
    if cfg.tile_overlap_px is not None and isinstance(tile, int) and cfg.tile_overlap_px >= tile:
        raise ConfigError(f"tile_overlap_px ({cfg.tile_overlap_px}) must be smaller than data.tile_size ({tile}); "
                          f"leave it out for an eighth of the tile ({default_overlap(tile)} px)")
    if o.amp not in ("auto", "none", "bf16", "fp16"):
        raise ConfigError(f"optim.amp must be auto, none, bf16 or fp16, got {o.amp!r}")


def check_training_tile(cfg: TrainConfig) -> None:
    """Refuse a tile size the model to train cannot take (predict would refuse the trained model).

    Not part of every config's check: ``evaluate`` reads the data section and takes the model from the
    checkpoint, whatever the config's model section says.
    """
    tile, m = cfg.data.get("tile_size", 512), cfg.model
    if not isinstance(tile, int) or isinstance(tile, bool):
        return  # the dataset refuses a tile size that is not a number
    try:
        size_divisor(m.architecture, m.args)
    except FastUNetError:
        raise  # an unknown architecture: say so now, before the data is read
    except (TypeError, KeyError, ValueError):
        return  # model.args the architecture cannot take: building the model says which
    check_tile_multiple(tile, m.architecture, m.args, key="data.tile_size")


def default_overlap(tile: int) -> int:
    """Return the prediction overlap stored for a tile size: an eighth of the tile, at most 64 px."""
    return min(64, max(0, tile // 8))


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``optim.epochs=3`` into (["optim", "epochs"], 3); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. optim.epochs=3")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {text!r} has no key")
    try:
        value = yaml.load(raw, Loader=YamlLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({exc})") from exc
    return path, value


def load_config(path: str | Path | None, overrides: Sequence[str] = (),
                base: Mapping[str, Any] | None = None, data: Mapping[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config (or start from ``base``), apply overrides, and check it.

    ``data``: keys laid over the config's data section before the overrides (``train --data FOLDER``: the
    folder's recognised layout replaces the config's ``kind`` and ``root``; its tile size, classes ... stay).
    """
    d: dict[str, Any] = dict(base or {})
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.load(p.read_text(), Loader=YamlLoader) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p} must hold a mapping of sections")
        d.update(loaded)
    if data is not None:
        section = d.get("data") or {}
        if not isinstance(section, Mapping):
            raise ConfigError(f"config section 'data' must be a mapping, got {section!r}")
        d["data"] = {**section, **data}
    for text in overrides:
        keys, value = parse_override(text)
        node = d
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {k} is not a section")
        node[keys[-1]] = value
    return config_from_dict(d)
