#!/usr/bin/env bash
# make gpu-check: measure training and prediction on a CUDA GPU (bench/gpu_check.py), not part of make test.
#
# With the project's venv (.venv) it uses that. Without one (a lent GPU machine: no network, no apt), it uses
# the machine's python3 and the wheels carried in .whl/ (rasterio, albumentations, ...), installed once into
# /tmp/site with the recipe of the device notes. Exit status: 0 all checks passed, 1 a check failed,
# 2 no CUDA GPU here (nothing measured).
set -u
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  PY=python3
  if compgen -G ".whl/*.whl" >/dev/null; then
    if [ ! -f /tmp/site/.fastunet-gpu-check ]; then
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || { echo "gpu-check: installing the carried wheels from .whl/ into /tmp/site failed"; exit 1; }
      touch /tmp/site/.fastunet-gpu-check
    fi
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec env -u PROJ_DATA -u PROJ_LIB "$PY" bench/gpu_check.py "$@"
