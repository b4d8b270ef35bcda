"""Build the installable QGIS plugin zip: ``dist/fastunet_geo.zip`` holding the folder ``fastunet_geo/``.

The folder holds the plugin (``qgis_plugin/``), ``metadata.txt`` and a copy of ``fastunet_core`` under
``_vendor/`` (the plugin puts it on ``sys.path``) and ``requirements/engine.txt`` (what its engine installer
installs), so it runs in any QGIS whose Python has the engine's
packages (torch, rasterio ...). The zip is reproducible: sorted entries, fixed timestamps.

Usage: python scripts/package_plugin.py [-o dist/fastunet_geo.zip]
Install: QGIS > Plugins > Manage and Install Plugins > Install from ZIP.
"""

from __future__ import annotations

import argparse
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLUGIN_DIR = "fastunet_geo"
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"}
SKIP_SUFFIXES = {".pyc", ".pyo"}
FIXED_TIME = (2024, 1, 1, 0, 0, 0)

log = logging.getLogger("package_plugin")


def _files(root: Path) -> Iterator[Path]:
    """Yield the files under ``root`` worth shipping, sorted."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and not SKIP_DIRS & set(path.relative_to(root).parts) and path.suffix not in SKIP_SUFFIXES:
            yield path


def plugin_entries(repo: Path = REPO) -> list[tuple[str, Path]]:
    """Return (name in the zip, file on disk) for everything the plugin zip holds."""
    entries = [(f"{PLUGIN_DIR}/{p.relative_to(repo / 'qgis_plugin').as_posix()}", p)
               for p in _files(repo / "qgis_plugin")]
    entries.append((f"{PLUGIN_DIR}/metadata.txt", repo / "metadata.txt"))
    entries += [(f"{PLUGIN_DIR}/_vendor/fastunet_core/{p.relative_to(repo / 'fastunet_core').as_posix()}", p)
                for p in _files(repo / "fastunet_core")]
    for extra in ("LICENSE", "requirements/engine.txt"):  # engine.txt: what the engine installer installs
        if (repo / extra).is_file():
            entries.append((f"{PLUGIN_DIR}/{extra}", repo / extra))
    return entries


def build_plugin_zip(output: Path, repo: Path = REPO) -> Path:
    """Write the plugin zip to ``output`` (its folder is created); return the path."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, path in plugin_entries(repo):
            info = zipfile.ZipInfo(name, FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())
    tmp.replace(output)
    return output


def main(argv: list[str] | None = None) -> int:
    """Build the zip from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=REPO / "dist" / "fastunet_geo.zip",
                        help="zip to write [default: dist/fastunet_geo.zip]")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = build_plugin_zip(args.output)
    log.info("wrote %s (%d files, %.1f kB)", out, len(plugin_entries()), out.stat().st_size / 1024)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
