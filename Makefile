# Two commands: `make run` serves the bridge, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: run test install install-test chromium bench lint mutate clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

$(VENV)/.installed-mutation: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet -e '.[test,mutation]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# The Procfile's web (gunicorn, settings in gunicorn.conf.py) and worker side by
# side under honcho, one command; Ctrl-C stops both. honcho gives the first line,
# web, PORT itself.
run: install
	$(BIN)/flask --app app init
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start --port $(PORT)

# Browser tests drive Debian's Chromium; Playwright's own download cannot work offline.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "Installing Debian's chromium for the browser tests"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; \
	fi

test: install-test chromium
	$(BIN)/python -m pytest

bench: install-test
	$(BIN)/python -m bench

# Mutation testing (mutmut 3; what it mutates and which tests it runs: pyproject.toml).
# Not part of `make test`. Results are kept in mutants/: a later run re-checks only
# what changed. The survivors are listed at the end.
mutate: $(VENV)/.installed-mutation
	$(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut export-cicd-stats && cat mutants/mutmut-cicd-stats.json && echo
	$(BIN)/mutmut results

lint: install-test
	$(BIN)/pip install --quiet ruff
	$(BIN)/ruff check bridge tests bench

clean:
	rm -rf $(VENV) .pytest_cache mutants
