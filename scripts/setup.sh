#!/usr/bin/env bash
# Install everything fastunet-geo needs on a fresh Debian 12/13 machine (run as root):
# QGIS from Debian, a venv from Debian's Python that sees Debian's packages, the pinned wheels,
# and the project itself (editable). Idempotent: a second run only checks and returns quickly.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

. /etc/os-release
case "${VERSION_CODENAME:-}" in
  bookworm) REQ=requirements/bookworm.txt ;;
  trixie)   REQ=requirements/trixie.txt ;;
  *) echo "fastunet-geo set-up: unsupported OS '${PRETTY_NAME:-unknown}'; Debian 12 (bookworm) or 13 (trixie) is needed." >&2; exit 2 ;;
esac

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

have_qgis() { /usr/bin/python3 -c 'import qgis.core' >/dev/null 2>&1 && command -v qgis_process >/dev/null 2>&1; }

if ! have_qgis || ! /usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "== installing QGIS and python3-venv from Debian (${VERSION_CODENAME}) =="
  export DEBIAN_FRONTEND=noninteractive
  if [ "$VERSION_CODENAME" = bookworm ]; then
    # Plain bookworm only has QGIS 3.22 (end of life); 3.40 LTR is in bookworm-backports.
    cat > /tmp/fastunet-backports.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
SRC
    as_root cp /tmp/fastunet-backports.sources /etc/apt/sources.list.d/fastunet-bookworm-backports.sources
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends -t bookworm-backports python3-qgis qgis-providers qgis
  else
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends python3-qgis qgis-providers qgis
  fi
  as_root apt-get install -y -qq --no-install-recommends python3-venv python3-dev
fi

stamp="$VENV/.fastunet-setup"
want="$(cat "$REQ" requirements/engine.txt pyproject.toml | sha1sum | cut -c1-40)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c 'import fastunet_core' >/dev/null 2>&1; then
  exit 0
fi

echo "== creating the venv ($VENV) from Debian's Python, with system site packages (for QGIS) =="
[ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$VENV"
# PROJ_DATA/PROJ_LIB pointing at Debian's proj.db break the rasterio wheel's bundled PROJ.
unset PROJ_DATA PROJ_LIB
"$VENV/bin/python" -m pip install -q -r "$REQ"
"$VENV/bin/python" -m pip install -q --no-deps -e .
echo "$want" > "$stamp"
echo "== set-up done =="
