# The two README commands: `make demo` (offline distillation demo on the packaged teacher and data) and
# `make test` (the test suite). Both create the virtual environment and install what is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1 TOKENIZERS_PARALLELISM=false

.PHONY: demo test test-slow gpu-smoke install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[demo,test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(OFFLINE) $(PY) -m distiller_nlp demo --output-dir runs/demo

test: $(STAMP)
	$(OFFLINE) $(PY) -m pytest -q

test-slow: $(STAMP)
	$(OFFLINE) $(PY) -m pytest -q -m slow

gpu-smoke: $(STAMP)
	$(OFFLINE) $(PY) benchmarks/gpu_smoke.py --output benchmarks/results/gpu_smoke.json

clean:
	rm -rf $(VENV) runs
