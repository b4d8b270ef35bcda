"""The one-click engine installer installs every package the engine imports (segmentation and training).

How: a static walk of the imports (the ``ast`` of each module, function-level imports included) from the
engine process's entry, ``qgis_plugin/engine_child.py``, through every ``qgis_plugin`` and ``fastunet_core``
module it can reach, so the ``train`` call's modules (config, loop, the raster + polygon dataset, augment,
plots) are all in. Each third-party name imported on the way is mapped to the distributions that provide it
here (``importlib.metadata``); one of them must be in what the installer's plan installs, or be a dependency
of one (following the installed packages' own requirements). Imports under ``if TYPE_CHECKING`` and inside a
``try`` that catches ImportError (optional packages) are not required. A static walk rather than running
the train entry in a child that sees only those packages: that needs a second venv built from wheels, which
this machine can do only slowly; the walk also sees imports that a short run would not reach.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

from packaging.requirements import Requirement

from qgis_plugin.installer import PackageSource, engine_requirements, plan_install, requirement_name, split_torch

REPO = Path(__file__).resolve().parent.parent
ENTRY = "qgis_plugin.engine_child"
# imported by the engine but deliberately not installed by the one-click installer, and why
NOT_INSTALLED: dict[str, str] = {}  # none now: smp (with torchvision beside torch) is installed too
# functions that QGIS calls and the engine process never does (the package's __init__ runs there too)
QGIS_ONLY = {("qgis_plugin", "classFactory")}
PIP_OPTIONS_WITH_VALUE = {"--index-url", "--extra-index-url", "--find-links", "--progress-bar"}


def _module_file(name: str) -> Path | None:
    base = REPO / name.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_ours(name: str) -> bool:
    return name.split(".")[0] in ("qgis_plugin", "fastunet_core")


def _catches_import_error(node: ast.Try) -> bool:
    names = set()
    for handler in node.handlers:
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        names |= {k.id for k in kinds if isinstance(k, ast.Name)}
    return bool(names & {"ImportError", "ModuleNotFoundError"})


def _imports(module: str) -> tuple[set[str], set[str]]:
    """Return (our modules, third-party top-level names) that ``module`` imports where they are required."""
    path = _module_file(module)
    assert path is not None, module
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text("utf-8"))
    ours: set[str] = set()
    theirs: set[str] = set()
    dynamic = False

    def visit(node: ast.AST, optional: bool) -> None:
        nonlocal dynamic
        if isinstance(node, ast.FunctionDef) and (module, node.name) in QGIS_ONLY:
            return
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child, optional)
            return
        if isinstance(node, ast.Try) and _catches_import_error(node):
            for child in node.body:
                visit(child, True)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, optional)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                _add(alias.name, [], optional)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            _add(target, [a.name for a in node.names], optional)
        elif isinstance(node, ast.Attribute) and node.attr == "import_module":
            dynamic = True
        for child in ast.iter_child_nodes(node):
            visit(child, optional)

    def _add(target: str, names: list[str], optional: bool) -> None:
        if _is_ours(target):
            ours.add(target)
            ours.update(f"{target}.{n}" for n in names if _module_file(f"{target}.{n}"))
        elif not optional and target.split(".")[0] not in sys.stdlib_module_names and target != "__future__":
            theirs.add(target.split(".")[0])

    visit(tree, False)
    if dynamic:  # importlib.import_module(<a name from a table>): every string that names one of our modules
        for const in (n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)):
            for candidate in (const, f"{package}.{const}"):
                if _is_ours(candidate) and _module_file(candidate):
                    ours.add(candidate)
    return ours, theirs


def engine_imports() -> tuple[set[str], set[str]]:
    """Return every module of ours the engine process can import, and the third-party names they import."""
    seen: set[str] = set()
    third: set[str] = set()
    todo = [ENTRY]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
            parent = ".".join(parts[:i])
            if parent in seen or _module_file(parent) is None:
                continue
            seen.add(parent)
            ours, theirs = _imports(parent)
            todo += sorted(ours - seen)
            third |= theirs
    return seen, third


def installed_by_plan() -> set[str]:
    """Return the project names the installer's pip steps install (torch, numpy, requirements/engine.txt)."""
    plan = plan_install(Path("/nonexistent/venv"), PackageSource(), gpu=False, python="python3")
    names: set[str] = set()
    for step in plan.steps:
        argv = list(step.argv)
        if "pip" not in argv:
            continue
        args = argv[argv.index("install") + 1:]
        skip = False
        for arg in args:
            if skip:
                skip = False
            elif arg.startswith("-"):
                skip = arg in PIP_OPTIONS_WITH_VALUE
            else:
                names.add(requirement_name(arg))
    return names


def with_dependencies(names: set[str]) -> set[str]:
    """Return ``names`` and everything their installed distributions require (no extras), transitively."""
    found: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(requirement_name(req.name))
    return found


def test_the_walk_reaches_the_train_path() -> None:
    ours, theirs = engine_imports()
    assert {"qgis_plugin.engine_calls", "fastunet_core.train.loop", "fastunet_core.train.config",
            "fastunet_core.train.datasets.raster_vector", "fastunet_core.train.augment",
            "fastunet_core.train.plots", "fastunet_core.inference.predict"} <= ours
    assert not any(m.startswith("fastunet_core.cli") for m in ours)  # the engine never imports the CLI
    assert not {"qgis", "PyQt5", "PyQt6"} & theirs  # nor QGIS or Qt (it runs in a plain Python)
    assert {"torch", "numpy", "rasterio", "geopandas", "albumentations", "pydantic", "yaml"} <= theirs


def test_installer_installs_every_package_the_engine_imports() -> None:
    _ours, theirs = engine_imports()
    provided = with_dependencies(installed_by_plan())
    providers = md.packages_distributions()
    missing = []
    for name in sorted(theirs - set(NOT_INSTALLED)):
        dists = {requirement_name(d) for d in providers.get(name, [])}
        assert dists, f"the engine imports {name}, which no installed distribution provides here"
        if not dists & provided:
            missing.append(f"{name} (from {', '.join(sorted(dists))})")
    assert not missing, f"the engine imports packages the installer does not install: {missing}; add them to " \
                        "requirements/engine.txt"


def test_the_check_step_imports_what_training_needs() -> None:
    check = plan_install(Path("/nonexistent/venv"), PackageSource(), gpu=False, python="python3").steps[-1].argv
    imported = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", check[-1].split(";")[0].removeprefix("import ")))
    _ours, theirs = engine_imports()
    assert (theirs - set(NOT_INSTALLED)) & {"torch", "geopandas", "albumentations", "pydantic", "yaml"} <= imported


def test_the_development_requirements_include_the_engine_list() -> None:
    """requirements/bookworm.txt and trixie.txt take the engine's packages from engine.txt, not a copy."""
    engine = {requirement_name(r) for r in engine_requirements()}
    assert "torch" in engine and split_torch(engine_requirements())[0].startswith("torch==")
    for name in ("bookworm", "trixie"):
        lines = [ln.split("#")[0].strip() for ln in (REPO / "requirements" / f"{name}.txt").read_text().splitlines()]
        assert "-r engine.txt" in lines
        own = {requirement_name(ln) for ln in lines if ln and not ln.startswith("-")}
        assert not own & engine, f"{name}.txt repeats {own & engine} from engine.txt"
