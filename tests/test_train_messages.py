"""Training's one-line refusals say what the user gave and what to give instead."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import run_cli

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("names", "said"), [
    ("[background]", "names no class for the polygons; give two names, background and the polygons' class "
                     "(e.g. [background, building])"),
    ("[background,building,road]", "names 2 classes besides background; give two names, background and the "
                                   "polygons' class"),
])
def test_one_class_polygons_with_the_wrong_class_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, names: str,
                                                       said: str) -> None:
    monkeypatch.chdir(REPO)  # the demo config's data/samples is relative to the repository
    code, out = run_cli("train", "-c", "training/demo_spacenet.yaml", f"data.class_names={names}",
                        "--output", str(tmp_path / "run"))
    assert code == 1
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1 and said in lines[0], out
    assert "has several" not in lines[0]


def test_the_documented_quick_run_uses_real_settings() -> None:
    """training/README's quick run: every override it shows is a setting the config takes, with a valid tile."""
    import shlex

    from fastunet_core.train.config import check_training_tile, load_config

    text = (REPO / "training" / "README.md").read_text()
    section = text.split("## A quick run first", 1)[1]
    command = section.split("```sh", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    args = shlex.split(command)
    config = args[args.index("-c") + 1]
    overrides = [a for a in args if "=" in a and "." in a.split("=", 1)[0] and not a.startswith("data.root=")]
    assert {o.split("=", 1)[0] for o in overrides} >= {"optim.max_batches_per_epoch", "data.loveda_scenes"}
    cfg = load_config(REPO / config, overrides)
    check_training_tile(cfg)
    assert cfg.optim.max_batches_per_epoch == 20 and cfg.data["loveda_scenes"] == ["Urban"]
    for name in ("README.md", "training/README.md"):  # both say how to cut an epoch short
        assert "optim.max_batches_per_epoch" in (REPO / name).read_text(), name
