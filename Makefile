# kd_det: `make demo` (the main job) and `make test` set everything up in .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet -c requirements/constraints.txt
STAMP  := $(VENV)/.kd_det-installed

.PHONY: install demo test test-fast clean-demo

# One-time set-up. If the system Python already imports Detectron2 (a full source build on a
# GPU cluster) the venv sees it (--system-site-packages) and its torch is used untouched.
$(STAMP): setup.py requirements/torch.txt requirements/constraints.txt requirements/lvis.txt tools/install_detectron2.py
	@if $(PYTHON) -c "import detectron2" 2>/dev/null; then \
	  echo "Using the system's Detectron2 and torch"; \
	  test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
	  test -x $(PY) || $(PYTHON) -m venv $(VENV); \
	  $(PIP) --upgrade pip "setuptools<81" wheel; \
	  echo "Installing torch (requirements/torch.txt) ..."; \
	  $(PIP) -r requirements/torch.txt; \
	fi
	$(PY) tools/install_detectron2.py
	$(PIP) -e ".[test]"
	$(PIP) --no-deps -r requirements/lvis.txt
	@touch $(STAMP)

install: $(STAMP)

# The main job: build the shapes dataset, train, evaluate, write the AP report.
demo: $(STAMP)
	$(PY) tools/demo.py

# pytest exit code 5 (no tests collected) is a failure, not a pass.
test: $(STAMP)
	@$(PY) -m pytest -q tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# The inner loop (about a minute on 2 cores): losses, core, config, the loss registry and the recipe
# table in one interpreter. --fast (tests/conftest.py) leaves out tests marked `slow` (a fresh
# interpreter, a training run) and fails a test here that starts a subprocess; `make test` runs all.
FAST_TESTS := tests/losses tests/test_core.py tests/test_kd_config.py tests/test_yaml_chain.py tests/test_recipes.py \
              tests/detection/test_config.py tests/classification/test_cls_configs.py
test-fast: $(STAMP)
	@$(PY) -m pytest -q --fast $(FAST_TESTS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-fast: pytest collected no tests" >&2; exit 1; fi; exit $$rc

clean-demo:
	rm -rf output/demo report/demo
