# fastunet-geo: the two commands of the README. Each installs what it needs (see scripts/setup.sh).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# rasterio's wheel brings its own PROJ; Debian's PROJ_DATA/PROJ_LIB would break it. Qt runs headless.
RUN := env -u PROJ_DATA -u PROJ_LIB QT_QPA_PLATFORM=offscreen

.PHONY: setup demo test lint bench plugin screenshots clean gpu-check

setup:
	@bash scripts/setup.sh

demo: setup
	@$(RUN) bash scripts/demo.sh

test: setup
	@$(RUN) $(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	@$(VENV)/bin/ruff check fastunet_core tests bench qgis_plugin scripts
	@$(VENV)/bin/mypy  # files and settings: [tool.mypy] in pyproject.toml

plugin: setup
	@$(PY) scripts/package_plugin.py

screenshots: setup
	@$(RUN) $(PY) scripts/qgis_screenshots.py

bench: setup
	@$(RUN) $(PY) bench/bench_predict.py

# on a CUDA machine: training/predict throughput, AMP agreement, OOM back-off, NCCL DDP, the cuda-marked tests
# (no setup: a lent GPU machine has no network; it uses .venv if present, else python3 + carried .whl/ wheels)
gpu-check:
	@bash scripts/gpu_check.sh

clean:
	rm -rf out .pytest_cache .ruff_cache
