# The fresh-machine commands of the README:
#   make run     installs TL Studio into .venv and opens the app
#   make test    installs it with the test tools, checks the import contracts and runs the whole suite
#   make lint    checks the import contracts only (the layers of tlstudio/core, no Qt in core or the CLI)
#   make bundle  builds the one-folder PyInstaller bundle in dist/tlstudio and self-tests it
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test install install-test install-bundle bundle lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'

install-bundle: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bundle]'

run: install
	$(PYTHON) packaging/system_libs.py --install
	$(BIN)/tlstudio

lint: install-test
	$(BIN)/lint-imports

# Two worker processes, one test file each at a time (a file's shared fixtures are built once).
test: lint
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -n 2 --dist loadfile

bundle: install-bundle
	$(BIN)/python packaging/build.py

clean:
	rm -rf $(VENV) build dist *.egg-info
