"""The model registry, the paper's published figures, and the model size summary."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fastunet_core.cli import cli
from fastunet_core.errors import ConfigError, UnknownArchitectureError
from fastunet_core.models import REGISTRY, build_model, get_architecture, size_divisor
from fastunet_core.models.checkpoint import load_checkpoint, save_checkpoint
from fastunet_core.models.metadata import InputSpec, ModelMeta, parse_class_spec
from fastunet_core.models.registry import check_arch_args
from fastunet_core.models.summary import (
    architecture_parameters,
    build_on_meta,
    count_parameters,
    summarize,
    summarize_model,
)

ALL = sorted(REGISTRY)
SMP = {"unetplusplus", "deeplabv3plus"}

# Cai & Zhang, "Finding a Faster UNet for Satellite Image Segmentation": 3 input bands.
PAPER_PARAMS = [
    ("unet_base", 8, 31_043_976),
    ("unet_base", 5, 31_043_781),
    ("unet_short", 5, 8_254_981),
    ("unet_skinny", 5, 20_095_781),
    ("unet_lessconv", 5, 20_281_253),
    ("unetplusplus", 5, 26_079_189),
    ("deeplabv3plus", 5, 22_438_485),
]
# The paper's "memory footprint" in MB at batch 1, 3x512x512, 5 classes.
PAPER_FOOTPRINT_MB = [("unet_skinny", 1292.25), ("unet_lessconv", 2444.25), ("unet_short", 5842.0)]


def _test_size(name: str) -> int:
    """Return the smallest multiple of the model's divisor that is at least 32 (small but not trivial)."""
    d = size_divisor(name)
    return d * max(1, -(-32 // d))


@pytest.mark.parametrize(("name", "classes", "expected"), PAPER_PARAMS)
def test_paper_parameter_counts(name: str, classes: int, expected: int) -> None:
    assert architecture_parameters(name, 3, classes) == expected


def test_meta_build_counts_like_a_real_build() -> None:
    real = build_model("unet_skinny", 4, 3)
    assert count_parameters(real) == count_parameters(build_on_meta("unet_skinny", 4, 3))


@pytest.mark.parametrize(("name", "expected_mb"), PAPER_FOOTPRINT_MB)
def test_paper_memory_footprint(name: str, expected_mb: float) -> None:
    s = summarize(name, 3, 5, 512)
    assert s.footprint_mb == expected_mb
    assert s.input_mb == 3.0
    assert s.total_mb == pytest.approx(s.input_mb + s.footprint_mb + s.params_mb)


@pytest.mark.parametrize("name", ALL)
def test_macs_agree_with_torch_flop_counter(name: str) -> None:
    model = build_on_meta(name, 3, 5).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, 256, 256, device="meta"))
    s = summarize(name, 3, 5, 256)
    assert s.gflops * 1e9 == pytest.approx(counter.get_total_flops(), rel=0, abs=1)
    assert 2 * s.macs == counter.get_total_flops()


def test_summary_leaves_the_model_as_it_was() -> None:
    model = build_on_meta("unet_tiny", 3, 2).train()
    summarize_model(model, (3, 64, 64))
    assert model.training
    assert not model._forward_hooks
    assert all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize(("bands", "classes"), [(1, 1), (1, 2), (4, 7), (13, 30)])
@pytest.mark.parametrize("name", ALL)
def test_any_band_and_class_count(name: str, bands: int, classes: int) -> None:
    model = build_on_meta(name, bands, classes).eval()
    size = _test_size(name)
    with torch.no_grad():
        y = model(torch.zeros(1, bands, size, 2 * size, device="meta"))
    assert y.shape == (1, classes, size, 2 * size)


# "unet" with its default arguments is unet_base; test_user_defined_unet runs it with other widths.
@pytest.mark.parametrize(("name", "bands", "classes"), [
    ("unet_base", 4, 7), ("unet_short", 1, 2), ("unet_skinny", 4, 7), ("unet_lessconv", 1, 2),
    ("unet_tiny", 4, 7), ("unetplusplus", 1, 2), ("deeplabv3plus", 4, 7),
])
def test_forward_backward_on_cpu(name: str, bands: int, classes: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, bands, classes).train()
    size = _test_size(name)
    x = torch.randn(2, bands, size, size)
    y = model(x)
    assert y.shape == (2, classes, size, size)
    y.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", ALL)
def test_size_divisor_is_the_real_one(name: str) -> None:
    d = size_divisor(name)
    model = build_on_meta(name, 3, 2).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, d, 3 * d, device="meta")).shape[-2:] == (d, 3 * d)
        if d == 1:  # any size fits (the 1x1 stand-in model)
            return
        with pytest.raises((ConfigError, RuntimeError), match=str(d)):
            model(torch.zeros(1, 3, d, d + d // 2, device="meta"))


def test_unet_rejects_bad_sizes_with_the_divisor_and_a_padded_size() -> None:
    model = build_on_meta("unet_skinny", 3, 2)
    with pytest.raises(ConfigError, match=r"multiples of 64.*pad to 128x512"):
        model(torch.zeros(1, 3, 100, 512, device="meta"))


def test_user_defined_unet() -> None:
    args = {"widths": [16, 32, 64], "convs": [2, 1, 1]}
    model = build_model("unet", 2, 3, args)
    assert size_divisor("unet", args) == 4
    assert len(model.encoder[0].layers) == 2 * 3  # two (conv, BN, ReLU) in the top level
    y = model(torch.randn(2, 2, 12, 20))
    assert y.shape == (2, 3, 12, 20)
    y.mean().backward()
    with pytest.raises(ConfigError, match="one count per level"):
        build_model("unet", 2, 3, {"widths": [16, 32, 64], "convs": [2, 1]})
    with pytest.raises(ConfigError, match="at least two levels"):
        build_model("unet", 2, 3, {"widths": [16]})


@pytest.mark.parametrize("name", ["unet_skinny", "deeplabv3plus"])
def test_checkpoint_round_trip_is_bit_identical(name: str, tmp_path) -> None:
    torch.manual_seed(1)
    model = build_model(name, 4, 3)
    _randomise_batchnorm_stats(model)
    model.eval()
    meta = ModelMeta(architecture=name, arch_args=check_arch_args(get_architecture(name).defaults),
                     input=InputSpec(bands=(1, 2, 3, 4)), classes=parse_class_spec("a,b,c"))
    path = save_checkpoint(tmp_path / "model.safetensors", model, meta)
    loaded = load_checkpoint(path)
    assert not loaded.model.training
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.model(x))
    assert loaded.meta.architecture == name


def _randomise_batchnorm_stats(model: nn.Module) -> None:
    """Make running statistics matter, so that a lost buffer would change the output."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)


def test_unknown_architecture_lists_the_valid_names() -> None:
    with pytest.raises(UnknownArchitectureError) as info:
        build_model("unet_huge", 3, 2)
    for name in ALL:
        assert (name in str(info.value)) == (not name.startswith("test_")), name  # stand-ins for tests unlisted
    with pytest.raises(KeyError):
        summarize("unet_huge")


def test_models_command_lists_the_paper_figures() -> None:
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name in ALL:
        assert any(line.startswith(name + " ") for line in lines)
    row = {line.split()[0]: line.split() for line in lines[3:]}
    assert row["unet_skinny"][1:3] == ["20,095,781", "67.41"]
    assert row["unet_skinny"][3] == "1292.25"
    assert row["unet_lessconv"][3] == "2444.25"
    assert row["unet_short"][3] == "5842.00"
    assert row["deeplabv3plus"][1] == "22,438,485"


def test_models_command_with_other_bands_classes_and_size() -> None:
    result = CliRunner().invoke(cli, ["models", "--classes", "8", "--bands", "3", "--size", "96"])
    assert result.exit_code == 0, result.output
    row = {line.split()[0]: line.split() for line in result.output.splitlines()[3:]}
    assert row["unet_base"][1] == "31,043,976"
    assert row["unet_skinny"][2:4] == ["-", "-"]  # 96 is not a multiple of 64
    assert "multiple of 64" in " ".join(row["unet_skinny"])
    assert CliRunner().invoke(cli, ["models", "--classes", "0"]).exit_code == 2
