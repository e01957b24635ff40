# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PY      := .venv/bin/python
REQ_SUM := $(shell cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
STAMP   := .venv/.installed-$(REQ_SUM)
PLOTLY_BUNDLE := .venv/share/mnistlab/plotly-cartesian-4.1.1.min.js
AXE_SCRIPT := .venv/share/mnistlab/axe-core-4.14.1.min.js
RAY_STAMP := .venv/.ray-installed-$(shell sha256sum requirements-ray.txt | cut -c1-16)
LIGHTNING_STAMP := .venv/.lightning-installed-$(shell sha256sum requirements-lightning.txt | cut -c1-16)
HOST    ?= 127.0.0.1
PORT    ?= 8050
WORKERS ?= 4
GRID    ?= training/grids/seeds.yaml

.PHONY: install install-ray install-lightning data browser run serve test test-fast bench screenshots

install: $(STAMP) $(PLOTLY_BUNDLE)
	@$(PY) -m training.engine.native_kernel

# Keyed on the content of requirements.txt and pyproject.toml: a second `make install` does nothing until one
# changes.  Then the project itself, editable (the `mnistlab` command, importable from any folder); --no-deps
# because its dependencies are requirements.txt, installed the line before.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .
	@rm -f .venv/.installed-*
	@touch $@

# The smaller plotly.js most pages load (dashboard/serving/lean_pages.py), from npm, sha256-checked.  Without npm
# it says so and the pages load the full bundle, so a failure here stops nothing.
$(PLOTLY_BUNDLE): $(STAMP)
	$(PY) -m dashboard.serving.lean_pages

# axe-core for the accessibility test (tests/axe_core.py), from npm, sha256-checked; without npm it says so in one
# line and the test fails under CI=true.
$(AXE_SCRIPT): $(STAMP)
	$(PY) -m tests.axe_core

# Ray is optional (grids with --ray); keyed on requirements-ray.txt the same way.
install-ray: $(RAY_STAMP)

$(RAY_STAMP): requirements-ray.txt $(STAMP)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-ray.txt
	@rm -f .venv/.ray-installed-*
	@touch $@

# Lightning is optional too (the callback in training.own_loop.lightning); the tests install it.
install-lightning: $(LIGHTNING_STAMP)

$(LIGHTNING_STAMP): requirements-lightning.txt $(STAMP)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-lightning.txt
	@rm -f .venv/.lightning-installed-*
	@touch $@

# MNIST_ROOT as training.nets.data reads it; the stamp says these files passed `make data` since they last changed.
MNIST_RAW   := $(or $(MNIST_ROOT),data)/MNIST/raw
MNIST_FILES := $(addprefix $(MNIST_RAW)/,train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
DATA_STAMP  := .venv/.mnist-verified-$(shell printf '%s' "$(abspath $(MNIST_RAW))" | sha256sum | cut -c1-12)

data: install
	$(PY) -m training.nets.data
	@touch $(DATA_STAMP)

# `make run` checks MNIST again only when a file is missing or changed since it last passed: whatever trains
# verifies every sha256 as it loads the data, so the stamp saves a process and a torch import, not a check.
$(DATA_STAMP): $(STAMP) $(MNIST_FILES)
	$(PY) -m training.nets.data
	@touch $@

$(MNIST_FILES): ;  # a missing file counts as changed: the stamp's recipe fetches it

# Debian's Chromium for the browser tests and screenshots; never a browser a tool downloads itself.
browser: $(AXE_SCRIPT)
	@command -v chromium >/dev/null || { \
	  echo "installing Chromium (Debian package) for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

# The dashboard at once (gunicorn as in `make serve`, two workers) while GRID trains in the background and
# shows up live; Ctrl-C stops both, and the next `make run` trains only what is not FINISHED.
run: $(DATA_STAMP)
	$(PY) -m dashboard.launch $(GRID) --host $(HOST) --port $(PORT) --workers 2

serve: data
	$(PY) -m dashboard.serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

test: data browser install-ray install-lightning
	$(PY) -m pytest -q --durations=15

test-fast: data
	$(PY) -m pytest -q -m "not slow and not browser"

bench: data
	$(PY) benchmarks/grid_throughput.py
	$(PY) benchmarks/dashboard_latency.py

# README pictures of every page, from the default store ({run}: the first run on the runs page).
SHOT_PATHS := --path '/runs/{run}' --path '/runs/{run}/neurons?layer=1' --path '/runs/{run}/neurons/1/0'
# With MLFLOW_UI_URL set (an `mlflow ui` over the same store), also the run page's MLflow link and what it opens.
screenshots: data browser
	$(PY) -m dashboard.screenshots docs/screenshots $(SHOT_PATHS) $(if $(MLFLOW_UI_URL),--mlflow-ui $(MLFLOW_UI_URL))
