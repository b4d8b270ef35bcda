"""Raster sources that are not local files: GDAL virtual paths and URLs, kept exactly as the user typed them.

``pathlib`` would collapse ``/vsizip//abs/pack.zip/inner.tif`` (GDAL's absolute zip path) into the
relative ``/vsizip/abs/...`` and ``https://host/x.tif`` into ``https:/host/x.tif``. :class:`VirtualPath`
carries such a string untouched (``os.fspath`` returns it as given, for rasterio) and offers the few
``Path`` attributes the pipeline uses to name outputs (``name``, ``stem``, ``suffix``).

A URL that cannot be reached fails at once with a message that says so: connecting is limited to a few
seconds without retries (unless the user set GDAL's own ``GDAL_HTTP_*`` options), and when GDAL's error
does not tell, the host name is looked up to tell "no network or unknown host" from "not a raster".
"""

from __future__ import annotations

import os
import posixpath
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

NETWORK_OPTIONS = {"GDAL_HTTP_CONNECTTIMEOUT": "10", "GDAL_HTTP_TIMEOUT": "30", "GDAL_HTTP_MAX_RETRY": "0"}
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_virtual(path: str | os.PathLike[str]) -> bool:
    """Tell GDAL virtual paths and URLs (``/vsizip/...``, ``/vsicurl/...``, ``https://...``) from local files."""
    s = os.fspath(path)
    return s.startswith("/vsi") or bool(_URL.match(s))


def url_in(path: str | os.PathLike[str]) -> str | None:
    """Return the network URL a source reads from (``https://...``, also inside ``/vsicurl/...``), if any."""
    s = os.fspath(path)
    m = re.search(r"(https?|ftp)://[^\s]+", s)
    if m:
        return m.group(0)
    return None


@dataclass(frozen=True)
class VirtualPath:
    """A GDAL virtual path or URL, kept verbatim (``os.fspath`` gives back exactly the text typed)."""

    text: str

    def __fspath__(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text

    @property
    def name(self) -> str:
        """The last path component (query string and trailing slashes left out)."""
        tail = self.text.split("?", 1)[0].rstrip("/")
        return posixpath.basename(tail) or tail

    @property
    def stem(self) -> str:
        """The name without its last suffix."""
        return posixpath.splitext(self.name)[0]

    @property
    def suffix(self) -> str:
        """The name's last suffix (``.tif``)."""
        return posixpath.splitext(self.name)[1]

    def resolve(self) -> VirtualPath:
        """Return itself (not a local file: nothing to resolve)."""
        return self

    def exists(self) -> bool:
        """Return False: not a local file (GDAL decides when it opens it)."""
        return False

    def is_file(self) -> bool:
        """Return False: not a local file."""
        return False

    def is_dir(self) -> bool:
        """Return False: not a local folder."""
        return False


RasterSource = Path | VirtualPath


def raster_source(spec: str | os.PathLike[str]) -> RasterSource:
    """Return a local path as a ``Path``, a GDAL virtual path or URL untouched as a :class:`VirtualPath`."""
    if isinstance(spec, VirtualPath):
        return spec
    s = os.fspath(spec)
    return VirtualPath(s) if is_virtual(s) else Path(s)


_NETWORK_WORDS = ("could not resolve", "couldn't resolve", "couldn't connect", "could not connect", "timed out",
                  "timeout", "network is unreachable", "connection refused", "no route to host")


def unreachable_reason(path: str | os.PathLike[str], gdal_message: str) -> str | None:
    """Return why a URL source could not be read, when it is the network (None: it is something else)."""
    url = url_in(path)
    if url is None:
        return None
    host = urlsplit(url).hostname
    low = gdal_message.lower()
    if any(w in low for w in _NETWORK_WORDS):
        return f"cannot reach {host}: no network connection, or the server does not answer ({gdal_message})"
    if host:
        try:
            socket.getaddrinfo(host, None)
        except (OSError, UnicodeError):
            return f"cannot reach {host}: no network connection, or no such host"
    m = re.search(r"HTTP (?:response )?code:? ?(\d{3})", gdal_message, re.IGNORECASE)
    if m:
        return f"the server of {url} answered HTTP {m.group(1)}"
    return None


def network_options() -> dict[str, str]:
    """GDAL options that make an unreachable URL fail within seconds (those the user set are kept)."""
    return {k: v for k, v in NETWORK_OPTIONS.items() if k not in os.environ}
