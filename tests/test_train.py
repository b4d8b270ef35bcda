"""Training end to end on CPU: every dataset layout learns, resume is exact, DDP (gloo) equals one process."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from cli_helpers import crop_png as _crop_png
from click.testing import CliRunner
from safetensors.torch import load_file

from fastunet_core.cli import cli
from fastunet_core.errors import ConfigError
from fastunet_core.models.checkpoint import load_checkpoint
from fastunet_core.train.config import config_from_dict, load_config
from fastunet_core.train.loop import agreement_batches, train

SMALL_UNET = {"architecture": "unet", "args": {"widths": [8, 16, 32], "convs": 1}}


def _config(tmp_path: Path, data: dict[str, Any], **optim: Any) -> dict[str, Any]:
    base_optim = {"epochs": 3, "batch_size": 4, "micro_batch": 4, "lr": 0.01, "num_workers": 0,
                  "max_batches_per_epoch": 4}
    return {"data": data, "model": SMALL_UNET, "optim": {**base_optim, **optim}, "device": "cpu",
            "output": str(tmp_path / "run")}




def _loveda_layout(tmp_path: Path, shared_data: Path) -> Path:
    src = shared_data / "mmseg-remote-sensing-samples" / "pseudo_loveda_dataset"
    root = tmp_path / "LoveDA"
    for split, name in (("Train", "0.png"), ("Val", "1.png")):
        for kind, folder in (("images_png", "img_dir"), ("masks_png", "ann_dir")):
            _crop_png(src / folder / name, root / split / "Urban" / kind / name)
    return root


def _folder_layout(tmp_path: Path, shared_data: Path) -> Path:
    src = shared_data / "mmseg-remote-sensing-samples" / "pseudo_loveda_dataset"
    root = tmp_path / "pairs"
    for name in ("0.png", "1.png"):
        for folder in ("img_dir", "ann_dir"):
            _crop_png(src / folder / name, root / folder / name)
    return root


def _layouts(tmp_path: Path, shared_data: Path) -> dict[str, dict[str, Any]]:
    return {
        "landcoverai": {"kind": "landcoverai", "root": str(shared_data / "torchgeo-fixtures" / "landcoverai"),
                        "tile_size": 32},
        "loveda": {"kind": "loveda", "root": str(_loveda_layout(tmp_path, shared_data)), "tile_size": 128,
                   "loveda_scenes": ["Urban"]},
        "folder": {"kind": "folder", "root": str(_folder_layout(tmp_path, shared_data)), "tile_size": 128,
                   "class_names": ["nodata", "background", "building", "road", "water", "barren", "forest",
                                   "agriculture"], "val_fraction": 0.5},
        "raster_vector": {"kind": "raster_vector", "root": str(shared_data / "solaris-spacenet"),
                          "raster": "sample_geotiff.tif", "vector": "geotiff_labels.geojson",
                          "class_names": ["background", "building"], "tile_size": 128},
    }


@pytest.mark.parametrize("layout", ["landcoverai", "loveda", "folder", "raster_vector"])
def test_loss_falls_on_every_layout(tmp_path: Path, shared_data: Path, layout: str) -> None:
    data = _layouts(tmp_path, shared_data)[layout]
    extra = {"input": {"value_range": [0, 2047]}} if layout == "raster_vector" else {}
    cfg = config_from_dict({**_config(tmp_path, data, epochs=4), **extra})
    result = train(cfg)
    losses = [h.train_loss for h in result.history]
    assert len(losses) == 4
    assert losses[-1] < losses[0], losses
    assert result.best_checkpoint.exists() and (result.output_dir / "curves.png").exists()
    meta = json.loads((result.output_dir / "history.json").read_text())
    assert [m["epoch"] for m in meta] == [1, 2, 3, 4]
    # the checkpoint records the ground resolution it learned at: measured from georeferenced images,
    # LoveDA's documented 0.3 m for its PNGs, none for plain PNG pairs
    expected = {"landcoverai": 0.25, "loveda": 0.3, "folder": None, "raster_vector": 0.5}[layout]
    recorded = load_checkpoint(result.best_checkpoint).meta.resolution_m
    assert recorded == (pytest.approx(expected, rel=1e-3) if expected else None)


def test_resolution_can_be_given_in_the_config(tmp_path: Path, shared_data: Path) -> None:
    data = {**_layouts(tmp_path, shared_data)["folder"], "resolution_m": 0.1}
    result = train(config_from_dict(_config(tmp_path, data, epochs=1)))
    meta = load_checkpoint(result.best_checkpoint).meta
    assert meta.resolution_m == 0.1
    # the bf16 agreement is measured on the validation tiles and recorded for --precision auto
    record = meta.metrics["bf16_agreement"]
    assert record["source"] == "validation tiles" and record["tiles"] > 0 and 0.5 < record["value"] <= 1.0
    assert isinstance(record["fp32_layers"], list) and record["bf16_only"] <= record["value"]  # the plan measured
    with pytest.raises(ConfigError, match="resolution_m"):
        train(config_from_dict(_config(tmp_path / "bad", {**data, "resolution_m": -1}, epochs=1)))


def test_resume_continues_to_the_same_result(tmp_path: Path, shared_data: Path) -> None:
    data = _layouts(tmp_path, shared_data)["landcoverai"]
    whole = _config(tmp_path / "a", data, epochs=3, micro_batch=2)
    train(config_from_dict(whole))
    part = _config(tmp_path / "b", data, epochs=3, micro_batch=2)
    train(config_from_dict({**part, "optim": {**part["optim"], "epochs": 1}}))  # "interrupted" after epoch 1
    result = train(config_from_dict(part))  # the same command again resumes
    assert [h.epoch for h in result.history] == [1, 2, 3]
    a = json.loads((tmp_path / "a" / "run" / "history.json").read_text())
    b = json.loads((tmp_path / "b" / "run" / "history.json").read_text())
    for ha, hb in zip(a, b, strict=True):
        assert ha["train_loss"] == pytest.approx(hb["train_loss"], abs=1e-6)
        assert ha["val_loss"] == pytest.approx(hb["val_loss"], abs=1e-6)
    wa = load_file(str(tmp_path / "a" / "run" / "last.safetensors"))
    wb = load_file(str(tmp_path / "b" / "run" / "last.safetensors"))
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-6) for k in wa)


def test_resume_refuses_a_different_config(tmp_path: Path, shared_data: Path) -> None:
    data = _layouts(tmp_path, shared_data)["landcoverai"]
    cfg = _config(tmp_path, data, epochs=1)
    train(config_from_dict(cfg))
    with pytest.raises(ConfigError, match="another configuration"):
        train(config_from_dict({**cfg, "optim": {**cfg["optim"], "lr": 0.5}}))


def test_ddp_two_processes_equal_one_process(tmp_path: Path, shared_data: Path) -> None:
    data = _layouts(tmp_path, shared_data)["landcoverai"]
    # one process: logical batch 2 = 2 accumulation steps of 1 image; two processes: 1 image each
    single = _config(tmp_path / "single", data, epochs=2, batch_size=2, micro_batch=1, max_batches_per_epoch=None)
    train(config_from_dict(single))
    multi = _config(tmp_path / "multi", data, epochs=2, batch_size=2, micro_batch=1, max_batches_per_epoch=None)
    cfg_file = tmp_path / "multi.yaml"
    cfg_file.write_text(yaml.safe_dump(multi))
    env = {k: v for k, v in os.environ.items() if k not in ("PROJ_DATA", "PROJ_LIB")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "fastunet_core.cli", "-q", "train", "-c", str(cfg_file)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = json.loads((tmp_path / "single" / "run" / "history.json").read_text())
    b = json.loads((tmp_path / "multi" / "run" / "history.json").read_text())
    for ha, hb in zip(a, b, strict=True):
        assert ha["train_loss"] == pytest.approx(hb["train_loss"], abs=1e-6)  # same gradients, same steps
        # BatchNorm running statistics (used in eval) come from rank 0's images only on CPU, where
        # SyncBatchNorm does not run, so the validation loss agrees closely but not exactly
        assert ha["val_loss"] == pytest.approx(hb["val_loss"], rel=1e-3)


def test_dataset_layout_recognised_from_its_folder(tmp_path: Path, shared_data: Path) -> None:
    from fastunet_core.errors import DatasetLayoutError
    from fastunet_core.models.metadata import InputSpec, ModelMeta, default_classes
    from fastunet_core.train.evaluate import data_section_for

    meta = ModelMeta("unet_tiny", {}, InputSpec(bands=(1, 2, 3), dtype="uint8", value_range=(0.0, 255.0)),
                     default_classes(["background", "building"]), tile_size_px=256)
    layouts = _layouts(tmp_path, shared_data)
    assert data_section_for(Path(layouts["landcoverai"]["root"]), meta)["kind"] == "landcoverai"
    assert data_section_for(Path(layouts["loveda"]["root"]), meta)["kind"] == "loveda"
    folder = data_section_for(Path(layouts["folder"]["root"]), meta)
    assert folder["kind"] == "folder" and folder["class_names"] == ["background", "building"]
    assert folder["label_values"] == [0, 1] and folder["tile_size"] == 256
    with pytest.raises(DatasetLayoutError, match="not found"):
        data_section_for(tmp_path / "nowhere", meta)


def test_config_errors_name_the_valid_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"valid:.*lr"):
        config_from_dict({"data": {"kind": "folder"}, "optim": {"learning_rate": 1}})
    with pytest.raises(ConfigError, match="multiple"):
        config_from_dict({"data": {"kind": "folder"}, "optim": {"batch_size": 8, "micro_batch": 3}})
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        load_config(None, ["optim.epochs"], base={"data": {"kind": "folder"}})


def test_cli_train_then_evaluate(tmp_path: Path, shared_data: Path) -> None:
    data = _layouts(tmp_path, shared_data)["landcoverai"]
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(_config(tmp_path, data, epochs=1)))
    runner = CliRunner()
    r = runner.invoke(cli, ["-q", "train", "-c", str(cfg_file), "optim.lr=0.02"])
    assert r.exit_code == 0, r.stderr
    r = runner.invoke(cli, ["evaluate", "-m", str(tmp_path / "run" / "best.safetensors"), "-c", str(cfg_file),
                            "--split", "val"])
    assert r.exit_code == 0, r.stderr
    assert "woodland" in r.stdout and "mIoU" in r.stdout
    # the same evaluation from the dataset folder alone: layout recognised, classes and tile from the model
    by_folder = runner.invoke(cli, ["evaluate", "-m", str(tmp_path / "run" / "best.safetensors"),
                                    "--data", data["root"], "--split", "val"])
    assert by_folder.exit_code == 0, by_folder.stderr
    assert by_folder.stdout == r.stdout
    r = runner.invoke(cli, ["train", "-c", str(tmp_path / "missing.yaml")])
    assert r.exit_code == 1 and "config file not found" in r.stderr


def test_cli_train_on_a_dataset_folder(tmp_path: Path, shared_data: Path) -> None:
    # train --data FOLDER, as evaluate --data: the layout is recognised (real LoveDA pairs in mmseg's
    # img_dir/ann_dir), what a folder cannot tell (classes, tile size) comes from the overrides
    pairs = _folder_layout(tmp_path, shared_data)
    names = "[background,building,road,water,barren,forest,agriculture]"  # LoveDA's codes 1..7; 0 is no-data
    quick = ["model.architecture=unet", "model.args={widths: [8, 16, 32], convs: 1}", "data.tile_size=128",
             "data.val_fraction=0.5", "optim.epochs=1", "optim.batch_size=2", "optim.micro_batch=2",
             "optim.max_batches_per_epoch=1", "optim.num_workers=0", "--device", "cpu"]
    runner = CliRunner()
    r = runner.invoke(cli, ["-q", "train", "--data", str(pairs), f"data.class_names={names}",
                            "data.label_values=[1,2,3,4,5,6,7]", *quick, "--output", str(tmp_path / "run")])
    assert r.exit_code == 0, r.stderr
    meta = load_checkpoint(tmp_path / "run" / "best.safetensors").meta
    assert [c.name for c in meta.classes] == ["background", "building", "road", "water", "barren", "forest",
                                              "agriculture"]
    assert [c.id for c in meta.classes] == [1, 2, 3, 4, 5, 6, 7]
    data = (meta.training or {})["config"]["data"]
    assert data["kind"] == "folder" and data["root"] == str(pairs) and data["tile_size"] == 128
    # a config's data section names another dataset: --data replaces its kind and root, its classes stay
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump({"data": {"kind": "landcoverai", "root": str(tmp_path / "elsewhere"),
                                                 "class_names": ["nodata", "background", "building", "road",
                                                                 "water", "barren", "forest", "agriculture"]}}))
    r = runner.invoke(cli, ["-q", "train", "-c", str(cfg_file), "--data", str(pairs), *quick,
                            "--output", str(tmp_path / "run2")])
    assert r.exit_code == 0, r.stderr
    assert len(load_checkpoint(tmp_path / "run2" / "best.safetensors").meta.classes) == 8
    # pairs without class names: one sentence saying what to add, no traceback
    r = runner.invoke(cli, ["train", "--data", str(pairs), *quick, "--output", str(tmp_path / "run3")])
    assert r.exit_code == 1 and "class_names" in r.stderr and "Traceback" not in r.output
    r = runner.invoke(cli, ["train", "--data", str(tmp_path / "nowhere")])
    assert r.exit_code == 1 and "dataset folder not found" in r.stderr


def test_agreement_batches_are_bounded_in_tiles_and_time() -> None:
    # the post-training bf16 check runs on the CPU: a fixed tile budget, and no new batch once time is up
    batches = [torch.full((8, 3, 4, 4), float(i)) for i in range(10)]
    cut = list(agreement_batches(iter(batches), max_tiles=20, max_seconds=100.0))
    assert [len(b) for b in cut] == [8, 8, 4]
    assert [float(b[0, 0, 0, 0]) for b in cut] == [0.0, 1.0, 2.0]
    ticks = iter([0.0, 5.0, 11.0, 12.0])  # the clock at the 1st, 2nd and 3rd batch
    slow = list(agreement_batches(iter(batches), max_tiles=100, max_seconds=10.0, clock=lambda: next(ticks)))
    assert len(slow) == 2  # the third batch starts after 11 s > 10 s
    counter = itertools.count()
    first_only = list(agreement_batches(iter(batches), max_tiles=100, max_seconds=0.5, clock=lambda: next(counter)))
    assert len(first_only) == 1  # something is always measured
