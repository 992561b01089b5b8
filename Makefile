# Two commands do all the set-up: `make study` (the main job) and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= quick
REPORT_PROFILE := $(if $(filter command line environment,$(origin PROFILE)),$(PROFILE),paper)
JOBS   ?= 2
LAB_FLAGS ?=        # e.g. --allow-root --no-browser on a server

.PHONY: study test bench report figures publish restore lab html clean-results

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

study: $(VENV)/.installed   ## run every notebook of the study (default: quick profile, offline)
	$(PY) -m kd_helpers.study --profile $(PROFILE)

test: $(VENV)/.installed    ## the test suite (papermill smoke runs included)
	$(PY) -m pytest -n $(JOBS) tests

bench: $(VENV)/.installed   ## speed benchmarks: against the usual DataLoader loop; the tuned study's constant factors
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/dropout.py

report: $(VENV)/.installed  ## README results + reports/<profile>/30_statistics, 31_report from the published runs (default paper)
	$(PY) -m kd_helpers.report --update-readme --profile $(REPORT_PROFILE)
	$(PY) -m kd_helpers.report --notebooks --profile $(REPORT_PROFILE)
	$(PY) -m kd_helpers.report --timings --update-readme --profile $(REPORT_PROFILE)

figures: $(VENV)/.installed ## figures/ from the published runs (re-executes the complete notebooks in a scratch dir; trains nothing)
	$(PY) -m kd_helpers.report --figures --profile $(REPORT_PROFILE)

publish: $(VENV)/.installed ## compact copy of results/$(PROFILE) into reports/$(PROFILE)/store (committed for paper)
	$(PY) -m kd_helpers.publish --profile $(PROFILE)

restore: $(VENV)/.installed ## fresh clone: copy reports/$(PROFILE)/store's runs into results/$(PROFILE) to continue the study
	$(PY) -m kd_helpers.publish --profile $(PROFILE) --restore

lab: $(VENV)/.installed     ## explore the notebooks in JupyterLab with the project's environment
	$(PY) -m ipykernel install --user --name kd-study --display-name "kd-study (.venv)"
	$(PY) -m jupyterlab --notebook-dir=notebooks $(LAB_FLAGS)

html: $(VENV)/.installed    ## HTML edition of reports/$(PROFILE) (index + one page per executed notebook)
	$(PY) -m kd_helpers.html_report --profile $(PROFILE)
