"""The one-click engine installer: the venv plan, and a real install on a fresh profile whose Python has no torch.

What the end-to-end test proves, and what it cannot: QGIS's own Python here is Debian's /usr/bin/python3, which
has PyQGIS but no torch and no rasterio. The dock's "Install the engine" task makes a venv in a fresh profile
folder from that Python (``--system-site-packages``), installs the CPU build of torch and the pinned geo
packages with pip, switches the engine to the venv's Python, and a segmentation then runs through the dock.
pip takes packages from this machine's configuration: PyPI is reachable, and pip's configuration adds local
wheel folders (``find-links``, including a CPU build of torch) and local indexes. The test points the installer
at the local CPU torch wheel through the installer's own settings (find-links and the torch requirement),
because the default source of CPU torch (download.pytorch.org) cannot be reached here: that default and the
CUDA branch (an NVIDIA driver found) are exercised only as planned commands, not as downloads. For the same
reason the install leaves out smp models' packages (QGIS setting ``fastunet_geo/smp_models`` false): the
torchvision built for a CPU torch comes from that index too (PyPI's is built for the CUDA torch and fails to
load its operators beside the CPU one: "operator torchvision::nms does not exist", seen here), so the marker
records them as left out and the dock does not ask for a Repair.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qgis_plugin.installer import (
    TORCH_CPU_INDEX,
    InstallError,
    PackageSource,
    Step,
    _run_step,
    engine_requirements,
    engine_venv,
    failure_sentence,
    plan_install,
    split_torch,
)

REPO = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).with_name("qgis_installer_child.py")
QGIS_PYTHON = "/usr/bin/python3"  # the Python the qgis executable embeds on Debian


def test_plan_uses_cpu_torch_without_nvidia_and_cuda_with(tmp_path: Path) -> None:
    venv = engine_venv(tmp_path / "profile")
    cpu = plan_install(venv, PackageSource(), gpu=False, python="/usr/bin/python3")
    assert [s.title for s in cpu.steps] == ["creating the environment", "installing torch",
                                            "installing the geo and training packages", "checking the engine"]
    torch_pin, packages = split_torch(engine_requirements())
    assert torch_pin == "torch==2.14.1"  # requirements/engine.txt: the CUDA build's pin, the CPU build's ceiling
    assert cpu.steps[0].argv == ("/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv))
    torch = cpu.steps[1].argv  # torchvision with it, from the same index: the CPU build for the CPU torch
    assert torch[torch.index("--index-url") + 1] == TORCH_CPU_INDEX and "torch>=2.2,<=2.14.1" in torch
    assert "--extra-index-url" not in torch  # the CPU index alone: no fallback to PyPI's CUDA build
    assert "torchvision<=0.29.1" in torch
    # the CPU index's step alone ignores pip's configuration (its extra indexes); the others follow it
    assert [s.pip_config for s in cpu.steps] == [True, False, True, True]
    gpu_plan = plan_install(venv, PackageSource(), gpu=True, python="/usr/bin/python3")
    gpu = gpu_plan.steps[1].argv
    assert {"torch==2.14.1", "torchvision==0.29.1"} <= set(gpu) and "--index-url" not in gpu  # PyPI's CUDA builds
    assert all(s.pip_config for s in gpu_plan.steps)
    offline = PackageSource(find_links=("/w",), offline=True)
    assert plan_install(venv, offline, gpu=False, python="p").steps[1].pip_config
    custom = plan_install(venv, PackageSource(index_url="https://mirror/simple", find_links=("/w",), offline=False,
                                              torch_index_url=""), gpu=False, python="p").steps[2].argv
    assert custom[-4:] == ("--index-url", "https://mirror/simple", "--find-links", "/w")
    rest = [pin for pin in packages if not pin.startswith("torchvision")]
    assert all(pin in custom for pin in rest)  # every other line of requirements/engine.txt (smp and timm too)
    assert "segmentation-models-pytorch==0.6.0" in rest and not any(a.startswith("torch") for a in custom)
    assert "segmentation_models_pytorch" in cpu.steps[3].argv[-1]  # a torchvision not built for torch fails here
    older = plan_install(venv, PackageSource(torch_requirement="torch==2.13.0"), gpu=False, python="p").steps[1].argv
    assert "torch==2.13.0" in older and "torchvision<=0.29.1" in older  # QGIS's setting replaces the CPU build's
    bare = plan_install(venv, PackageSource(), gpu=False, python="p", smp_models=False)  # no CPU torchvision reachable
    assert bare.left_out == ("torchvision", "segmentation-models-pytorch", "timm")
    assert not any(a.startswith(("torchvision", "segmentation", "timm")) for s in bare.steps for a in s.argv)
    assert "segmentation_models_pytorch" not in bare.steps[3].argv[-1]


def _fake_wheel(folder: Path, name: str, version: str) -> Path:
    """Write an empty wheel ``name-version`` into ``folder`` (a find-links folder as it is)."""
    import zipfile

    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    wheel.parent.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return wheel


def _fake_wheel_index(root: Path, name: str, version: str) -> str:
    """A PEP 503 index (file://) holding one empty wheel ``name-version``: a stand-in for PyPI's CUDA torch."""
    wheel = _fake_wheel(root / "files", name, version)
    page = root / "simple" / name / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text(f'<html><body><a href="{wheel.as_uri()}">{wheel.name}</a></body></html>')
    return (root / "simple").as_uri()


def _dry_run(step: Step, monkeypatch: pytest.MonkeyPatch, pip_config: Path | None = None) -> Step:
    """The planned pip step as a dry run in this Python, with none of this machine's pip configuration.

    ``pip_config``: the pip configuration file pip reads instead (PIP_CONFIG_FILE), as a user's would be.
    """
    # this machine's pip config adds local indexes holding torch
    monkeypatch.setenv("PIP_CONFIG_FILE", str(pip_config) if pip_config else os.devnull)
    for name in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_RETRIES", "1")  # an unreachable index fails at once (pip says why on its retry)
    return dataclasses.replace(step, argv=(sys.executable, *step.argv[1:], "--dry-run", "--ignore-installed"))


def test_cpu_torch_cannot_fall_back_to_another_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """download.pytorch.org unreachable (here: a closed local port) and a mirror holding 'torch 2.14.1' (PyPI's CUDA
    build in real life): the CPU step stops with one sentence instead of taking the mirror's torch."""
    mirror = _fake_wheel_index(tmp_path / "mirror", "torch", "2.14.1")
    source = PackageSource(index_url=mirror, torch_index_url="http://127.0.0.1:9/whl/cpu")
    plan = plan_install(engine_venv(tmp_path / "profile"), source, gpu=False, python="p", smp_models=False)
    lines: list[str] = []
    with pytest.raises(InstallError) as raised:
        _run_step(_dry_run(plan.steps[1], monkeypatch), lines.append, lambda: False)
    said = str(raised.value)
    assert said.startswith("installing torch failed: http://127.0.0.1:9/whl/cpu cannot be reached"), said
    assert "Settings > Options > Advanced > fastunet_geo/torch_index_url" in said
    assert "|" not in said and "\n" not in said and len(said) < 300  # one sentence; pip's output went to the log
    assert any("No matching distribution found for torch" in ln for ln in lines)
    assert not any("Would install" in ln for ln in lines)
    # the mirror is what it claims: the geo step (which uses it) would take that torch
    geo = Step("installing the geo and training packages", ("p", "-m", "pip", "install", "torch<=2.14.1",
                                                             *source.pip_options()), 0.4, source.where())
    _run_step(_dry_run(geo, monkeypatch), lines.append, lambda: False)
    assert any("Would install torch-2.14.1" in ln for ln in lines)


@pytest.mark.parametrize("configured_by", ["a pip configuration file", "PIP_EXTRA_INDEX_URL"])
def test_cpu_torch_ignores_the_indexes_of_pips_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             configured_by: str) -> None:
    """The user's pip adds an index offering a higher torch (PyPI's CUDA build in real life, several GB): the CPU
    step takes its own index's torch, and a pinned torch from the installer's own wheel folder, never that one."""
    extra = _fake_wheel_index(tmp_path / "extra", "torch", "2.14.1")
    cpu_index = _fake_wheel_index(tmp_path / "cpu", "torch", "2.13.0")
    wheels = _fake_wheel(tmp_path / "wheels", "torch", "2.12.0").parent  # the installer's find-links folder
    config = tmp_path / "pip.conf"
    config.write_text(f"[global]\nextra-index-url = {extra}\n" if configured_by != "PIP_EXTRA_INDEX_URL" else "")
    venv = engine_venv(tmp_path / "profile")
    said = {}
    for version, source in (("2.13.0", PackageSource(torch_index_url=cpu_index)),
                            ("2.12.0", PackageSource(find_links=(str(wheels),), torch_index_url=cpu_index,
                                                     torch_requirement="torch==2.12.0"))):
        step = plan_install(venv, source, gpu=False, python="p", smp_models=False).steps[1]
        assert not step.pip_config
        run = _dry_run(step, monkeypatch, config)
        if configured_by == "PIP_EXTRA_INDEX_URL":
            monkeypatch.setenv("PIP_EXTRA_INDEX_URL", extra)
        lines: list[str] = []
        _run_step(run, lines.append, lambda: False)
        said[version] = [ln for ln in lines if ln.startswith("Would install")]
        # the user's pip is what it claims: a step that follows pip's configuration takes the extra index's torch
        lines = []
        _run_step(dataclasses.replace(run, pip_config=True), lines.append, lambda: False)
        assert any("Would install torch-2.14.1" in ln for ln in lines) == (version == "2.13.0"), lines
    assert said == {"2.13.0": ["Would install torch-2.13.0"], "2.12.0": ["Would install torch-2.12.0"]}, said


def test_install_failures_are_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    offline = PackageSource(find_links=(str(wheels),), offline=True)
    plan = plan_install(engine_venv(tmp_path / "profile"), offline, gpu=False, python="p", smp_models=False)
    with pytest.raises(InstallError) as raised:  # a real pip run: nothing in the wheel folder
        _run_step(_dry_run(plan.steps[2], monkeypatch), lambda _line: None, lambda: False)
    assert str(raised.value) == (f"installing the geo and training packages failed: numpy was not found in the wheel "
                                 f"folders {wheels}; set another source in Settings > Options > Advanced > "
                                 "fastunet_geo/pip_find_links")
    full = ["Collecting torch", "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on "
            "device"]  # pip's words when the disk fills
    assert failure_sentence(plan.steps[1], full, 1) == (
        "installing torch failed: the disk is full; free some space (the engine takes about 1 GB with the CPU "
        "build of torch) and install again")
    broken = ["Traceback (most recent call last):", "ImportError: libtorch_cpu.so: cannot open shared object file"]
    assert failure_sentence(plan.steps[3], broken, 1) == (
        "checking the engine failed (exit code 1: ImportError: libtorch_cpu.so: cannot open shared object file); "
        "pip's output is in the dock's log")


def _pip_find_links() -> list[str]:
    """The wheel folders pip is configured with on this machine (pip config / PIP_FIND_LINKS)."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    links = [v.strip("'") for k, v in (ln.split("=", 1) for ln in out.splitlines() if "=" in ln)
             if k.endswith("find-links")]
    links += os.environ.get("PIP_FIND_LINKS", "").split()
    return [p for p in dict.fromkeys(links) if Path(p).is_dir()]


@pytest.mark.qgis
@pytest.mark.slow
def test_install_on_a_fresh_profile_then_segment(qgis_model: Path, small_raster: Path, tmp_path: Path) -> None:
    check = subprocess.run([QGIS_PYTHON, "-c", "import qgis.core, importlib.util as u; "
                            "print(u.find_spec('torch') is None and u.find_spec('rasterio') is None)"],
                           capture_output=True, text=True)
    assert check.stdout.strip() == "True", f"{QGIS_PYTHON} should have QGIS and no torch/rasterio: {check.stderr}"
    wheels = [w for folder in _pip_find_links() for w in Path(folder).glob("torch-*+cpu-*.whl")]
    if not wheels:
        pytest.skip("no local CPU build of torch in pip's find-links folders; the download would be several GB")
    version = wheels[0].name.split("-")[1]
    profile = tmp_path / "profile"
    env = {k: v for k, v in os.environ.items() if k not in ("PROJ_DATA", "PROJ_LIB", "VIRTUAL_ENV", "PYTHONHOME")}
    path = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    env.update(QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(REPO), QGIS_CUSTOM_CONFIG_PATH=str(profile), PATH=path)
    proc = subprocess.run([QGIS_PYTHON, str(CHILD), str(qgis_model), str(small_raster),
                           str(wheels[0].parent), f"torch=={version}"], capture_output=True, text=True, env=env,
                          timeout=1800)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")), None)
    assert line is not None, f"exit {proc.returncode}: {proc.stdout[-2000:]} {proc.stderr[-3000:]}"
    report = json.loads(line[len("REPORT "):])
    assert report["torch_in_qgis_python"] is False and report["rasterio_in_qgis_python"] is False
    before = report["before"]
    assert before["engine_ok"] is False and "torch" in before["missing"] and before["run_enabled"] is False
    assert before["device_info"] == "Known once the engine is installed."  # not "Looking for a GPU..." for ever
    assert before["button"] == "Install the engine"
    install = report["install"]
    assert install["finished"] and install["error"] is None, install
    settings_dir = Path(report["settings_dir"])
    assert settings_dir.is_relative_to(profile)  # the fresh profile, not the user's
    assert install["python"] == str(engine_venv(settings_dir) / "bin" / "python")
    assert install["engine_ok"] is True and install["button"] == "Repair / reinstall the engine"
    assert install["lacking"] == [] and install["note"] == ""  # smp's packages left out on purpose, not lacking
    marker = json.loads((engine_venv(settings_dir) / "fastunet_geo_engine.json").read_text())
    assert marker["left_out"] == ["torchvision", "segmentation-models-pytorch", "timm"]
    assert any(f"engine ok: torch {version}" in ln for ln in install["log_tail"])
    assert report["model_loaded"] is True
    segment = report["segment"]
    assert segment["ran"] and segment["error"] is None, segment
    assert segment["tiles"] == 6 and segment["class_raster_written"] and segment["features"] >= 1
    assert segment["layers"] == ["ortho", "ortho classes", "ortho polygons"]
    assert report["torch_imported_in_qgis"] is False  # the engine ran in the venv, never in QGIS's process
    shutil.rmtree(profile)  # the engine venv is 1.6 GB: a passed run leaves no disk behind (a failed one keeps it)


@pytest.mark.qgis
def test_every_plugin_module_imports_in_qgis_python_without_the_engine() -> None:
    """QGIS's own Python may lack the engine (it lives in the venv): no plugin module may need it at import."""
    # engine_child runs in the engine's Python (the Processing train algorithm's inputs included: the engine
    # checks its configuration)
    skip = ("engine_child.py",)
    modules = sorted(p.relative_to(REPO).with_suffix("").as_posix().replace("/", ".")
                     for p in (REPO / "qgis_plugin").rglob("*.py") if p.name not in skip)
    code = ("import importlib, sys; from qgis.core import QgsApplication; app = QgsApplication([], False); "
            f"[importlib.import_module(m) for m in {modules!r}]; "
            "print(sorted(m for m in ('torch', 'rasterio', 'affine', 'shapely', 'pyproj', 'safetensors', 'pydantic', "
            "'yaml', 'geopandas', 'albumentations') "
            "if m in sys.modules))")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    env.update(QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(REPO))
    done = subprocess.run([QGIS_PYTHON, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
