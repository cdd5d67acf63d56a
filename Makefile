# Two commands from a fresh clone: `make run` (the CPU quick start) and `make test` (the suite). Both create a
# virtual environment in $(VENV) with the tested dependency set (requirements.lock) on first use.
VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python

.PHONY: install run test lock

install: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e ".[cpu,dev,peers]"
	touch $@

run: install
	$(PY) run_recbole_genrec.py --model=TIGER

test: install
	$(PY) -m pytest -q

# The environment's versions as the new lock (after `pip install -e ".[cpu,dev,peers]"` with changed dependencies).
lock:
	{ sed -n '1,3p' requirements.lock; $(PY) -m pip freeze --all --exclude-editable | grep -v -E '^(torch|pip)=='; } > requirements.lock.new
	mv requirements.lock.new requirements.lock
