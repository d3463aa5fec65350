# Two commands do all the set-up on a fresh machine:
#   make demo   create the venv, install, train on `digits`, certify with cohen / laplace / uniform and with
#               ancer / rddrs (two metrics), cohen sequentially, tables + plot
#   make test   create the venv, install, run the default (fast) test suite
#   make docs   build the documentation site into site/ (open site/index.html)
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# torch is not pinned in pyproject (users bring their own); on the project machines these wheels are on disk.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test test-slow typecheck docs bench experiment-mnist lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH_PINS)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test,mnist,docs]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/manifoldcert demo

test: $(STAMP)
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

typecheck: $(STAMP)
	$(VENV)/bin/mypy manifoldcert

# the documentation site (mkdocs.yml): open site/index.html; the default test run makes the same strict build
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d site

bench: $(STAMP)
	$(VENV)/bin/manifoldcert bench estimator

experiment-mnist: $(STAMP)
	$(PY) experiments/mnist_cohen.py

lint: $(STAMP)
	$(VENV)/bin/ruff check manifoldcert tests experiments

clean:
	rm -rf $(VENV) results site
