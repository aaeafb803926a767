# labelloop: every target sets up what it needs (a .venv from pyproject.toml + constraints.txt).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.labelloop-installed

.PHONY: install demo demo-simulated test test-unit bench bench-smoke bench-scale ls-install ls-start ls-stop lock clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[install] creating $(VENV) with the pinned versions (constraints.txt); a few minutes the first time ..."
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install --progress-bar off -c constraints.txt -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

## The two commands of the quick start
demo:
	@mkdir -p .labelloop
	@# Label Studio installs and boots in the background while the project's venv installs; both stream
	@# to the terminal (prefixed), and a line every 10 s says what is still running.
	@(while sleep 10 && kill -0 $$$$ 2>/dev/null; do echo "[demo] still installing / starting ($$(date +%T)) ..."; done) & hb=$$!; \
	  ( (infra/label_studio.sh install && infra/label_studio.sh start) 2>&1 | tee .labelloop/label-studio-boot.log \
	    | sed -u 's/^/[label-studio] /' ) & ls=$$!; \
	  $(MAKE) --no-print-directory install || exit 1; \
	  echo "[demo] project installed; waiting for Label Studio (log: .labelloop/label-studio-boot.log) ..."; \
	  wait $$ls; kill $$hb 2>/dev/null; \
	  $(VENV)/bin/labelloop demo

test: $(STAMP)
	$(PY) -m pytest -n 3 --dist loadfile --no-loadscope-reorder

## More
demo-simulated: $(STAMP)
	$(VENV)/bin/labelloop demo --backend simulated

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit

bench: $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e ".[bench]"
	$(PY) benchmarks/al_benchmark.py

bench-smoke: $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e ".[bench]"
	$(PY) benchmarks/al_benchmark.py --smoke

## Scale-out benchmark (issue 7): 100k / 300k / 1M generated texts, threads and Dask; writes benchmarks/RESULTS.md
bench-scale: $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e ".[dask]"
	$(PY) benchmarks/scale_benchmark.py --runners threads,dask --repeats 3 --write-results

ls-install:
	infra/label_studio.sh install

ls-start:
	infra/label_studio.sh start

ls-stop:
	infra/label_studio.sh stop

## Re-resolve and pin dependencies (maintainers)
lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:
	rm -rf $(VENV) labelloop-demo .pytest_cache
