# fastunet-geo: the two commands of the README. Each installs what it needs (see scripts/setup.sh).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# rasterio's wheel brings its own PROJ; Debian's PROJ_DATA/PROJ_LIB would break it. Qt runs headless.
RUN := env -u PROJ_DATA -u PROJ_LIB QT_QPA_PLATFORM=offscreen

.PHONY: setup demo test lint bench plugin screenshots clean

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

clean:
	rm -rf out .pytest_cache .ruff_cache
