"""The plugin's own metadata (metadata.txt): version and the project's home URLs, kept in that one file."""

from __future__ import annotations

import configparser
import functools
from pathlib import Path

HERE = Path(__file__).resolve().parent


@functools.lru_cache(maxsize=1)
def plugin_metadata() -> dict[str, str]:
    """Return metadata.txt's [general] section: beside the plugin when installed, at the repository's root here."""
    for candidate in (HERE / "metadata.txt", HERE.parent / "metadata.txt"):
        if candidate.is_file():
            parser = configparser.ConfigParser(interpolation=None)
            parser.read(candidate, encoding="utf-8")
            return dict(parser["general"])
    return {}


def help_url(topic: str = "") -> str:
    """Return the help page for ``topic`` (an algorithm id) under the project's homepage."""
    home = plugin_metadata().get("homepage", "").rstrip("/")
    return f"{home}/#{topic}" if home and topic else home
