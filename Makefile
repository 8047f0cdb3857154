# Every target builds .venv from nothing when it is missing, so a fresh clone needs only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The browser tests drive Debian's Chromium through its chromedriver (never a
# downloaded one): installed here when missing. Needs root, as on CI.
CHROMEDRIVER := /usr/bin/chromedriver

.PHONY: demo test bench lint clean screenshots

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ghostline demo

$(CHROMEDRIVER):
	apt-get update && apt-get install -y chromium chromium-driver

test: $(STAMP) $(CHROMEDRIVER)
	$(BIN)/python -m pytest -q

# Rewrites docs/web-phone.png and docs/web-desktop.png (make test writes them to a
# temporary folder only).
screenshots: $(STAMP) $(CHROMEDRIVER)
	GHOSTLINE_SCREENSHOTS=docs $(BIN)/python -m pytest -q tests/web/test_web_screenshots.py

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
