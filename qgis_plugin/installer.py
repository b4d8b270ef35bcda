"""The engine's private Python environment: a venv in the QGIS profile folder, made from QGIS's own Python.

Why: QGIS's Python often may not take packages (Debian/Ubuntu refuse ``pip install --user``:
externally-managed-environment), and forcing them in can replace the numpy that QGIS's GDAL bindings were
built against. A venv of its own, created from QGIS's Python with ``--system-site-packages`` (so QGIS's numpy
and bindings stay visible and are not replaced), takes the engine's pinned packages; the engine then runs in
a child process under that venv's Python (:mod:`.engine_process`), and QGIS's process never imports them.

Steps (plain commands, run by :func:`run_plan` with their output streamed): create the venv; install torch
(the CPU build from PyTorch's CPU index unless an NVIDIA driver is found: then PyPI's CUDA build); install
the rest; import what segmentation and training import. What is installed is the project's own list,
``requirements/engine.txt`` (the one the development set-up installs too; the plugin zip carries it), read
by :func:`engine_requirements`: no second list here. Where packages come from is a :class:`PackageSource`
(index URL, find-links folders, offline), read from QGIS's settings by the dock. Nothing here imports Qt or QGIS.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fastunet_core.errors import CancelledError, FastUNetError

from .engine_modules import SMP_MODULES, TRAIN_MODULES

VENV_NAME = "fastunet_geo_engine"
MARKER = "fastunet_geo_engine.json"  # written last: its presence means the install finished
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_CPU_OLDEST = "2.2"  # the CPU build: any from this one up to the pinned version (what the CPU index has)
REQUIREMENTS = "engine.txt"  # in requirements/ beside qgis_plugin/ (the repository) or inside it (the zip)
# smp models' packages: torchvision must be the build for the torch installed (the CPU one from the CPU index),
# so a machine that cannot reach one may install the engine without them (QGIS setting fastunet_geo/smp_models)
SMP_PACKAGES = ("torchvision", "segmentation-models-pytorch", "timm")


class InstallError(FastUNetError):
    """The engine could not be installed; the message says which step failed and its last output."""


@dataclass(frozen=True)
class PackageSource:
    """Where pip takes packages from.

    Attributes:
        index_url: pip's ``--index-url`` for every package ("": pip's own configuration, normally PyPI).
        find_links: folders or pages of wheels (``--find-links``), searched as well.
        offline: ``--no-index``: only ``find_links``.
        torch_index_url: where the CPU build of torch comes from ("": like the other packages).
        torch_requirement: which torch to install on a machine without an NVIDIA driver ("": the CPU build up
            to the version requirements/engine.txt pins).

    """

    index_url: str = ""
    find_links: tuple[str, ...] = ()
    offline: bool = False
    torch_index_url: str = TORCH_CPU_INDEX
    torch_requirement: str = ""

    def where(self) -> str:
        """Say where the packages other than the CPU build of torch come from."""
        if self.offline:
            return f"the wheel folders {'; '.join(self.find_links)}" if self.find_links else "no source (offline)"
        return self.index_url or "PyPI (or the index in pip's configuration)"

    def setting(self) -> str:
        """Return the QGIS setting that changes where the packages other than the CPU build of torch come from."""
        return "pip_find_links" if self.offline else "pip_index_url"

    def pip_options(self) -> list[str]:
        """Return pip's source options for the packages other than torch."""
        options = ["--no-index"] if self.offline else (["--index-url", self.index_url] if self.index_url else [])
        for link in self.find_links:
            options += ["--find-links", link]
        return options


@dataclass(frozen=True)
class Step:
    """One command of the installation."""

    title: str
    argv: tuple[str, ...]
    weight: float  # share of the whole, for the progress bar
    index: str = ""  # where pip takes this step's packages from, in words ("": not a pip step)
    setting: str = "pip_index_url"  # the QGIS setting that changes it
    # False: pip's own configuration names no source for this step (see :func:`pip_environment`): its argv does
    pip_config: bool = True


@dataclass(frozen=True)
class InstallPlan:
    """What an installation will do."""

    venv: Path
    base_python: str
    gpu: bool
    steps: tuple[Step, ...] = field(default_factory=tuple)
    left_out: tuple[str, ...] = ()  # packages of requirements/engine.txt deliberately not installed (smp's)

    def describe(self) -> str:
        """Say in one line what is installed where."""
        torch = "CUDA build of torch (NVIDIA driver found)" if self.gpu else "CPU build of torch"
        return f"a private Python environment in {self.venv} from {self.base_python}, with the {torch}"


def requirements_file() -> Path:
    """Return the engine's requirements file: the repository's ``requirements/engine.txt``, or the zip's copy."""
    here = Path(__file__).resolve().parent
    for folder in (here / "requirements", here.parent / "requirements"):
        if (folder / REQUIREMENTS).is_file():
            return folder / REQUIREMENTS
    raise InstallError(f"the plugin's list of engine packages (requirements/{REQUIREMENTS}) is missing; "
                       "reinstall the plugin")


def engine_requirements(path: Path | None = None) -> tuple[str, ...]:
    """Return the requirement lines of the engine's requirements file (comments and blank lines dropped)."""
    lines = (ln.split("#", 1)[0].strip() for ln in (path or requirements_file()).read_text("utf-8").splitlines())
    return tuple(ln for ln in lines if ln and not ln.startswith("-"))


def requirement_name(requirement: str) -> str:
    """Return a requirement's project name as pip compares them (``PyYAML>=6`` -> ``pyyaml``)."""
    found = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    if found is None:
        raise InstallError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", found.group(0)).lower()


TORCH_FAMILY = ("torch", "torchvision")  # built for each other: installed in one step, from one source


def split_torch(requirements: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """Return torch's requirement (the CUDA build's pin) and the other requirements (torchvision's included)."""
    torch = [r for r in requirements if requirement_name(r) == "torch"]
    if len(torch) != 1:
        raise InstallError(f"requirements/{REQUIREMENTS} must name torch once")
    return torch[0], tuple(r for r in requirements if requirement_name(r) != "torch")


def torch_family(requirements: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Return the requirements of torch and the packages built against it (torchvision), and the others.

    They are installed together from one source: PyPI's torchvision is built for PyPI's (CUDA) torch and
    fails to load its operators beside the CPU build, and the other way round.
    """
    split_torch(requirements)  # torch named once
    family = tuple(r for r in requirements if requirement_name(r) in TORCH_FAMILY)
    return family, tuple(r for r in requirements if requirement_name(r) not in TORCH_FAMILY)


def cpu_torch(pinned: str) -> str:
    """Return the CPU build's requirement: any version from TORCH_CPU_OLDEST up to the pinned one.

    torchvision: any version up to the pinned one (pip takes the one built for the torch it installs).
    """
    found = re.fullmatch(r"(torch|torchvision)\s*==\s*([0-9][0-9.]*)", pinned.strip())
    if not found:
        return pinned
    oldest = f">={TORCH_CPU_OLDEST}," if found.group(1) == "torch" else ""
    return f"{found.group(1)}{oldest}<={found.group(2)}"


def engine_venv(profile_folder: str | Path) -> Path:
    """Return where the engine's venv lives inside a QGIS profile folder."""
    return Path(profile_folder) / "python" / VENV_NAME


def venv_python(venv: Path) -> Path:
    """Return the venv's Python executable."""
    return venv / ("Scripts/python.exe" if sys.platform.startswith("win") else "bin/python")


def installed_engine_python(profile_folder: str | Path) -> Path | None:
    """Return the engine venv's Python if an installation finished there, else None."""
    venv = engine_venv(profile_folder)
    python = venv_python(venv)
    return python if (venv / MARKER).is_file() and python.is_file() else None


def engine_lacks(venv: Path, requirements: tuple[str, ...] | None = None,
                 system_folders: tuple[Path, ...] | None = None) -> tuple[str, ...]:
    """Return the engine's packages (project names) that an installed engine venv does not have.

    An engine installed by an earlier version of the plugin lacks what was added to
    ``requirements/engine.txt`` since (training's packages, smp): Repair installs them. Looked up by the
    installed projects' metadata folders (``NAME-VERSION.dist-info``, ``.egg-info``) in the venv and, when it
    sees them (``--system-site-packages``), in ``system_folders`` (default: the site folders of the Python it
    was made from, this one): a directory listing, no import, so the dock can ask at every start.
    """
    wanted = requirements if requirements is not None else engine_requirements()
    left_out = _marker(venv).get("left_out")  # left out on purpose (smp's): not for Repair to add
    skipped = {str(n) for n in left_out} if isinstance(left_out, list) else set()
    wanted = tuple(r for r in wanted if requirement_name(r) not in skipped)
    folders = list(venv.glob("lib/python3*/site-packages")) + list(venv.glob("Lib/site-packages"))
    if _sees_system_packages(venv):
        folders += list(system_folders if system_folders is not None else _system_site_folders())
    have: set[str] = set()
    for folder in folders:
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                stem, dot, kind = entry.name.rpartition(".")
                if dot and kind in ("dist-info", "egg-info"):
                    have.add(requirement_name(stem.split("-", 1)[0]))
    return tuple(dict.fromkeys(n for n in map(requirement_name, wanted) if n not in have))


def _marker(venv: Path) -> dict[str, object]:
    try:
        found = json.loads((venv / MARKER).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _sees_system_packages(venv: Path) -> bool:
    try:
        text = (venv / "pyvenv.cfg").read_text("utf-8")
    except OSError:
        return True
    found = re.search(r"^\s*include-system-site-packages\s*=\s*(\w+)", text, re.MULTILINE)
    return found is None or found.group(1).lower() == "true"


def _system_site_folders() -> tuple[Path, ...]:
    import site

    return tuple(Path(p) for p in site.getsitepackages([sys.base_prefix]))


def base_python() -> str:
    """Return QGIS's own Python interpreter (``sys.executable`` is QGIS itself inside the application)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if sys.platform.startswith("win"):
        candidates = [Path(sys.prefix) / "python.exe", Path(sys.prefix) / "python3.exe"]
    else:
        candidates = [Path(sys.base_prefix) / "bin" / f"python{version}", Path(sys.base_prefix) / "bin" / "python3"]
    return next((str(p) for p in candidates if p.is_file()), sys.executable)


def nvidia_driver_found() -> bool:
    """Return True when an NVIDIA driver is installed (nvidia-smi, or the Linux kernel module)."""
    return shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia/version").exists()


def numpy_requirement() -> str:
    """Keep numpy's major version that QGIS's Python has (its GDAL bindings are built against it)."""
    try:
        from importlib.metadata import version

        major = int(version("numpy").split(".")[0])
    except Exception:  # no numpy in QGIS's Python (unusual): numpy 1, as most QGIS 3 builds
        major = 1
    return "numpy>=1.24,<2" if major < 2 else "numpy>=2"


def plan_install(venv: Path, source: PackageSource, gpu: bool | None = None, python: str | None = None,
                 smp_models: bool = True) -> InstallPlan:
    """Return the commands that make ``venv`` and install the engine into it (without smp's if not ``smp_models``)."""
    base = python or base_python()
    use_gpu = nvidia_driver_found() if gpu is None else gpu

    wanted = engine_requirements()
    left_out = () if smp_models else tuple(requirement_name(r) for r in wanted if requirement_name(r) in SMP_PACKAGES)
    family, packages = torch_family(tuple(r for r in wanted if requirement_name(r) not in left_out))
    py = str(venv_python(venv))
    pip = (py, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off")
    torch_index, own_sources = source.where(), False
    if use_gpu:
        torch_args: tuple[str, ...] = (*family, *source.pip_options())  # PyPI's Linux/Windows wheels: CUDA builds
    else:
        torch_reqs = tuple(source.torch_requirement if source.torch_requirement and requirement_name(r) == "torch"
                           else cpu_torch(r) for r in family)
        if source.torch_index_url and not source.offline:
            # from that index alone (with torch's dependencies, which PyTorch's index carries too): with a second
            # index, pip falls back to PyPI's torch, the CUDA build (several GB), whenever the first is unreachable,
            # and takes a higher version from it anyway; so no index or wheel folder of pip's configuration either
            torch_args = (*torch_reqs, "--index-url", source.torch_index_url,
                          *[a for link in source.find_links for a in ("--find-links", link)])
            torch_index = source.torch_index_url
            own_sources = True
        else:
            torch_args = (*torch_reqs, *source.pip_options())
    # what segmentation and training import, and smp (whose import loads torchvision: a mismatched build fails here)
    imports = ", ".join([*TRAIN_MODULES, *(SMP_MODULES if smp_models else ())])
    steps = (
        Step("creating the environment", (base, "-m", "venv", "--system-site-packages", str(venv)), 0.05),
        Step("installing torch", (*pip, *torch_args), 0.5, torch_index,
             "torch_index_url" if torch_index == source.torch_index_url else source.setting(), not own_sources),
        Step("installing the geo and training packages", (*pip, numpy_requirement(), *packages,
                                                          *source.pip_options()), 0.4, source.where(),
             source.setting()),
        Step("checking the engine", (py, "-c", f"import {imports}; print('engine ok: torch', torch.__version__)"),
             0.05),
    )
    return InstallPlan(venv, base, use_gpu, steps, left_out)


def run_plan(plan: InstallPlan, on_line: Callable[[str], None], is_cancelled: Callable[[], bool],
             on_percent: Callable[[float], None] | None = None) -> Path:
    """Run the plan from scratch (an earlier environment is removed first); return the engine's Python.

    Raises:
        CancelledError: the user cancelled (the half-made environment is removed).
        InstallError: a step failed (its last output lines are in the message).

    """
    if plan.venv.exists():
        on_line(f"removing the earlier environment {plan.venv}")
        shutil.rmtree(plan.venv)
    plan.venv.parent.mkdir(parents=True, exist_ok=True)
    done = 0.0
    try:
        for step in plan.steps:
            on_line(f"== {step.title}: {' '.join(step.argv)}")
            _run_step(step, on_line, is_cancelled)
            done += step.weight
            if on_percent is not None:
                on_percent(100 * done)
        (plan.venv / MARKER).write_text(json.dumps({"python": str(venv_python(plan.venv)), "gpu": plan.gpu,
                                                    "installed": time.strftime("%Y-%m-%d %H:%M:%S"),
                                                    "left_out": list(plan.left_out)}))
    except BaseException:
        shutil.rmtree(plan.venv, ignore_errors=True)
        raise
    return venv_python(plan.venv)


# pip's environment variables that add or change where packages come from (each option's PIP_<NAME> form)
PIP_SOURCE_VARIABLES = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX")


def pip_environment(step: Step) -> dict[str, str]:
    """Return the environment a step runs in: this one, less PYTHONPATH, PYTHONHOME and VIRTUAL_ENV (QGIS's).

    A step whose sources are all on its command line (``pip_config`` False: the CPU build of torch from its
    index) runs with ``PIP_CONFIG_FILE`` set to ``os.devnull``, with which pip loads none of its configuration
    files (global, user, or the venv's), and without pip's source variables. Otherwise an ``extra-index-url``
    there is searched too, ``--index-url`` notwithstanding, and pip takes its higher torch: PyPI's CUDA build.
    pip's ``--isolated`` is not enough (it skips the user's file and variables, not /etc/pip.conf, where e.g.
    Raspberry Pi OS adds piwheels), and ``--no-index`` drops ``--index-url`` too. The rest of the environment
    (HTTPS_PROXY, PIP_CERT, PIP_RETRIES ...) is kept; a proxy set only in a pip configuration file is not.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    if not step.pip_config:
        env = {k: v for k, v in env.items() if k not in PIP_SOURCE_VARIABLES}
        env["PIP_CONFIG_FILE"] = os.devnull
    return env


def _run_step(step: Step, on_line: Callable[[str], None], is_cancelled: Callable[[], bool]) -> None:
    proc = subprocess.Popen(step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            encoding="utf-8", errors="replace", env=pip_environment(step))
    seen: list[str] = []  # the output, for :func:`failure_sentence` (the dock's log has every line already)
    assert proc.stdout is not None
    with proc.stdout:
        for line in proc.stdout:  # pip prints a line per package; a cancel waits for the next line at most
            text = line.rstrip()
            seen = [*seen[-199:], text]
            on_line(text)
            if is_cancelled():
                with contextlib.suppress(OSError):
                    proc.terminate()
                proc.wait()
                raise CancelledError("engine installation cancelled; nothing was kept")
    code = proc.wait()
    if is_cancelled():
        raise CancelledError("engine installation cancelled; nothing was kept")
    if code != 0:
        raise InstallError(failure_sentence(step, seen, code))


SETTINGS_PLACE = "Settings > Options > Advanced > fastunet_geo"  # where QGIS shows the package-source settings
_NO_NETWORK = re.compile(r"NewConnectionError|Failed to establish a new connection|name resolution|"
                         r"Name or service not known|nodename nor servname|ConnectTimeoutError|Network is unreachable|"
                         r"No route to host|ProxyError|Connection refused|ReadTimeoutError|SSLError")
_NOT_FOUND = re.compile(r"No matching distribution found for (\S+)")
_DISK_FULL = re.compile(r"No space left on device|\[Errno 28\]")


def failure_sentence(step: Step, output: list[str], code: int) -> str:
    """Say in one sentence why a step failed and what to change: no network, a package not found, a full disk.

    pip's output itself stays in the dock's log; this is what the message bar shows.
    """
    text = "\n".join(output)
    log = "pip's output is in the dock's log"
    if _DISK_FULL.search(text):
        return (f"{step.title} failed: the disk is full; free some space (the engine takes about 1 GB with the CPU "
                "build of torch) and install again")
    missing = _NOT_FOUND.search(text)
    change = f"set another source in {SETTINGS_PLACE}/{step.setting}"
    if step.setting == "torch_index_url":
        change += " (or a folder with the CPU wheel in pip_find_links and its version in torch_requirement)"
    if missing and _NO_NETWORK.search(text):
        return f"{step.title} failed: {step.index} cannot be reached (no network, or a proxy in the way); {change}"
    if missing:
        name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", missing.group(1))
        return f"{step.title} failed: {name.group(0) if name else missing.group(1)} was not found in {step.index}; " \
            f"{change}"
    errors = [ln.removeprefix("ERROR: ").strip() for ln in output if ln.startswith("ERROR:")]
    last = (errors or [ln.strip() for ln in output if ln.strip()] or ["no output"])[-1]
    return f"{step.title} failed (exit code {code}: {last[:200]}); {log}"
