# RSCoVLM for QGIS. `make run` and `make test` set everything up themselves on a fresh Debian
# machine: Debian packages (QGIS for the plugin tests), then the backend's venv in .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# This pair loads together (the Qwen2.5-VL processor needs torchvision) and runs on the CPU.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
APT_PACKAGES := python3-qgis qgis-providers python3-pytest xvfb
SAMPLE := resources/sample/scene.tif
TINY_MODEL := resources/models/tiny-random

.PHONY: install system-packages run test test-backend bench lint clean

install: system-packages $(VENV)/.installed

system-packages:
	@if ! /usr/bin/python3 -c "import qgis.core" >/dev/null 2>&1; then \
		echo "Installing Debian packages: $(APT_PACKAGES)"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

$(SAMPLE): | $(VENV)/.installed
	$(PY) -m training.synthetic --out $@ --size 2048 --seed 7

$(TINY_MODEL)/config.json: | $(VENV)/.installed
	$(PY) -m training.scratch --out $(TINY_MODEL) --size tiny

run: install $(SAMPLE) $(TINY_MODEL)/config.json
	@echo "No bundled demo checkpoint yet: running on a randomly initialised tiny Qwen2.5-VL ($(TINY_MODEL))."
	@echo "Its answers are noise; this shows the whole pipeline, raster to GeoPackage, end to end."
	@mkdir -p out
	$(VENV)/bin/rscovlm detect $(SAMPLE) --model $(TINY_MODEL) --classes "plane,ship,small vehicle" --max-new-tokens 96 -o out/detections.gpkg
	$(VENV)/bin/rscovlm caption $(SAMPLE) --model $(TINY_MODEL) --extent 500000,4400000,500512,4400512 --extent-crs EPSG:32633 -o out/caption.gpkg
	$(VENV)/bin/rscovlm ask $(SAMPLE) --model $(TINY_MODEL) --question "How many planes are parked?" -o out/answer.gpkg

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) -m benchmarks

lint: install
	$(VENV)/bin/ruff check backend training tests benchmarks

clean:
	rm -rf out build dist $(TINY_MODEL) resources/sample
