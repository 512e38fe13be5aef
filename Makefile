# Set-up and entry points. `make demo` and `make test` create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cotam-installed

.PHONY: install demo test test-all bench clean serve-env

$(STAMP): requirements/lock-cpu.txt setup.cfg
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet --no-deps -r requirements/lock-cpu.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## the main job: Kodak encode/decode, bpp/PSNR table, RD plot (out/demo/)
	$(PY) -m cotam_llava demo

test: $(STAMP)  ## the default test run (skips slow tests)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ""

bench: $(STAMP)  ## full codec benchmark on Kodak (eval/results/)
	$(PY) eval/bench_codec.py

serve-env:  ## the vLLM serving environment for `cotam serve` on this CPU (.venv-serve; scripts/serve_env.sh)
	bash scripts/serve_env.sh

clean:
	rm -rf $(VENV) out build *.egg-info
