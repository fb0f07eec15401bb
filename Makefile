# Set-up is part of every target: a fresh machine needs only python3 (>= 3.10) and make.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean chromium

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/rasterlearn demo demo-output

# The web pages are tested in Debian's Chromium, driven by Playwright (never a browser download).
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null; }

test: $(STAMP) chromium
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/pytest -n 2 --dist loadfile tests

bench: $(STAMP)
	$(PY) -m pip install -q -e ".[dev,bench]"
	for b in export nms inference scale serve train_quality web cell_size change_detection; do $(PY) benchmarks/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) demo-output benchmarks/out
