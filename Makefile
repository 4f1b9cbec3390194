# RSCoVLM for QGIS. `make run` and `make test` set everything up themselves on a fresh Debian
# machine: Debian packages (QGIS for the plugin tests), then the backend's venv in .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# This pair loads together (the Qwen2.5-VL processor needs torchvision) and runs on the CPU.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
APT_PACKAGES := python3-qgis qgis-providers python3-pytest xvfb
# QGIS 3.40 LTR, what users run: Debian 12's own suite has 3.22 (end of life), its backports 3.40.
QGIS_MIN_VERSION_INT := 34000
QGIS_SUITE := $(shell . /etc/os-release 2>/dev/null && echo $${VERSION_CODENAME:-bookworm})-backports
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SAMPLE := resources/sample/scene.tif
# The bundled checkpoint (resources/models/demo/README.md), trained by `make demo-model`, and what
# `make run` asks it about the sample scene (a town of the synthetic world it knows).
DEMO_MODEL := resources/models/demo
DEMO_CLASSES := building,large vehicle,plane,ship,small vehicle,storage tank
DEMO_QUESTION := What colour is the plane?
# The plugin runs (and is tested) in QGIS's own Python: Debian's QGIS, GDAL and numpy 1.24, with
# pytest-qgis in a venv that sees the system packages; the backend's .venv is never on its path.
QGIS_VENV := .venv-qgis
PLUGIN := rscovlm_qgis
PACKAGE_DIR ?= dist

.PHONY: install system-packages apt-suite run demo-model test test-backend test-plugin test-qt6 package bundle screenshot bench lint clean

install: system-packages $(VENV)/.installed

system-packages:
	@if ! /usr/bin/python3 -c "import sys; from qgis.core import Qgis; sys.exit(Qgis.QGIS_VERSION_INT < $(QGIS_MIN_VERSION_INT))" >/dev/null 2>&1; then \
		echo "Installing Debian packages from $(QGIS_SUITE) (QGIS 3.40 LTR): $(APT_PACKAGES)"; \
		$(MAKE) --no-print-directory apt-suite && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq -t $(QGIS_SUITE) $(APT_PACKAGES) >/dev/null; \
	fi

# Debian's backports suite, added once (deb822 sources file) and indexed.
apt-suite:
	@grep -rqs -- "$(QGIS_SUITE)" /etc/apt/sources.list /etc/apt/sources.list.d/ || \
		printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
		"$(QGIS_SUITE)" | $(SUDO) tee /etc/apt/sources.list.d/$(QGIS_SUITE).sources >/dev/null
	$(SUDO) apt-get update -qq

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

$(SAMPLE): | $(VENV)/.installed
	$(PY) -m training.synthetic --out $@ --size 1536 --seed 7 --kind town

# The main job on the sample scene with the bundled demo checkpoint (the default --model):
# detection, a caption and a question answered through the Zoom-in Chain, then scores against
# the scene's ground truth and out/preview.png.
run: install $(SAMPLE)
	@test -f $(DEMO_MODEL)/config.json || { echo "$(DEMO_MODEL) is missing: make demo-model trains it (about two hours on 2 CPU cores)."; exit 2; }
	@mkdir -p out
	$(VENV)/bin/rscovlm detect $(SAMPLE) --classes "$(DEMO_CLASSES)" --batch-size 8 --max-new-tokens 640 -o out/detections.gpkg
	$(VENV)/bin/rscovlm caption $(SAMPLE) -o out/caption.gpkg
	$(VENV)/bin/rscovlm ask $(SAMPLE) --question "$(DEMO_QUESTION)" -o out/answer.gpkg
	@echo
	$(PY) -m training.demo_report --scene $(SAMPLE) --detections out/detections.gpkg --caption out/caption.gpkg \
		--answer out/answer.gpkg --question "$(DEMO_QUESTION)" --preview out/preview.png

# The demo checkpoint from nothing: synthetic data, a from-scratch model, full training, scores,
# model card (training/demo_model.py). Resumes where it stopped when run again.
demo-model: install
	$(PY) -m training.demo_model --data data/demo --run runs/demo --out $(DEMO_MODEL)

test: install
	$(PY) -m pytest -q
	$(MAKE) test-plugin
	$(MAKE) test-qt6

$(QGIS_VENV)/.installed:
	/usr/bin/python3 -m venv --system-site-packages $(QGIS_VENV)
	$(QGIS_VENV)/bin/python -m pip install -q 'pytest-qgis>=5,<6' 'jsonschema>=4'
	touch $@

test-plugin: system-packages $(VENV)/.installed $(QGIS_VENV)/.installed
	QT_QPA_PLATFORM=offscreen $(QGIS_VENV)/bin/python -m pytest -c tests/plugin/pytest.ini -q tests/plugin

# QGIS 4 runs the plugin on Qt6: every plugin module imported under real PyQt6 (a stand-in for
# qgis.core/gui), every Qt name it spells looked up there (tests/qt6).
QT6_VENV := .venv-qt6
$(QT6_VENV)/.installed:
	$(PYTHON) -m venv $(QT6_VENV)
	$(QT6_VENV)/bin/python -m pip install -q 'PyQt6>=6.5,<7' 'pytest>=8'
	touch $@

test-qt6: $(QT6_VENV)/.installed
	QT_QPA_PLATFORM=offscreen $(QT6_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/qt6

# The zip QGIS's plugin manager installs: one top folder named like a Python package, with
# metadata.txt, LICENSE, the code, icons and styles; no compiled files.
# It carries the backend of the same version as a wheel (backend_wheel/), which Install backend...
# (qgis_plugin/installer.py) installs into an environment of its own.
package: $(VENV)/.installed
	rm -rf $(PACKAGE_DIR)/.build $(PACKAGE_DIR)/$(PLUGIN).zip
	mkdir -p $(PACKAGE_DIR)/.build/$(PLUGIN)/resources
	cp qgis_plugin/*.py metadata.txt LICENSE $(PACKAGE_DIR)/.build/$(PLUGIN)/
	cp -r resources/icons resources/styles $(PACKAGE_DIR)/.build/$(PLUGIN)/resources/
	$(PY) -m pip wheel -q --no-deps --wheel-dir $(PACKAGE_DIR)/.build/$(PLUGIN)/backend_wheel .
	cd $(PACKAGE_DIR)/.build && $(PYTHON) -m zipfile -c ../$(PLUGIN).zip $(PLUGIN)
	rm -rf $(PACKAGE_DIR)/.build
	@echo "wrote $(PACKAGE_DIR)/$(PLUGIN).zip"

# docs/screenshot.png: the real QGIS desktop app under Xvfb, the plugin installed from the zip into
# a throwaway profile; docs/screenshot.py (run with --code) starts the backend (the bundled demo
# checkpoint) from the dock on the sample scene, asks three questions and grabs the main window.
SHOT_PROFILES := build/screenshot
screenshot: install package $(SAMPLE)
	@command -v qgis >/dev/null || { $(MAKE) --no-print-directory apt-suite && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends -t $(QGIS_SUITE) qgis >/dev/null; }
	rm -rf $(SHOT_PROFILES) && mkdir -p $(SHOT_PROFILES)/profiles/default/python/plugins $(SHOT_PROFILES)/profiles/default/QGIS
	$(PYTHON) -m zipfile -e $(PACKAGE_DIR)/$(PLUGIN).zip $(SHOT_PROFILES)/profiles/default/python/plugins
	printf '[PythonPlugins]\n$(PLUGIN)=true\n' > $(SHOT_PROFILES)/profiles/default/QGIS/QGIS3.ini
	RSCOVLM_SHOT_RASTER=$(CURDIR)/$(SAMPLE) RSCOVLM_SHOT_MODEL=$(CURDIR)/$(DEMO_MODEL) RSCOVLM_SHOT_COMMAND=$(CURDIR)/$(VENV)/bin/rscovlm \
	RSCOVLM_SHOT_QUESTION="$(DEMO_QUESTION)" \
	RSCOVLM_SHOT_OUT=$(CURDIR)/docs/screenshot.png XDG_CONFIG_HOME=$(CURDIR)/$(SHOT_PROFILES)/config \
		xvfb-run -a -s "-screen 0 1600x1000x24" qgis --profiles-path $(SHOT_PROFILES) --profile default --nologo --noversioncheck --code docs/screenshot.py
	@test -s docs/screenshot.png && echo "wrote docs/screenshot.png"

# The offline bundle (qgis_plugin/bundle.py): the plugin zip, every wheel the backend needs on this
# platform and Python (torch included) and the demo checkpoint, as a folder and a zip; Install
# backend... and `python3 -m rscovlm_qgis.installer --bundle DIR` install from it with no network.
BUNDLE_DIR ?= $(PACKAGE_DIR)/rscovlm-bundle
bundle: package
	$(PY) -m qgis_plugin.bundle --out $(BUNDLE_DIR) --plugin-zip $(PACKAGE_DIR)/$(PLUGIN).zip --model $(DEMO_MODEL)

bench: install
	$(PY) -m benchmarks

lint: install
	$(VENV)/bin/ruff check backend training tests benchmarks
	$(VENV)/bin/ruff check --target-version py39 qgis_plugin

clean:
	rm -rf out build dist resources/sample
