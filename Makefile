# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: install demo test deps bench clean docs-img

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip -c constraints.txt
	$(PIP) install -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/audit demo

test: $(STAMP)
	$(PY) -m pytest -q --durations=25

# Every package imported by probes/ and audit/ is declared in pyproject.toml (also a test:
# tests/test_dependencies.py).
deps: $(STAMP)
	$(PY) -m deptry probes audit

bench: $(STAMP)
	$(PY) benchmarks/bench_hooks.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# Figures shown in the README, rendered by the package itself.
docs-img: $(STAMP)
	$(PY) -c "from audit.synthetic import SyntheticConfig, make_cohort; from audit.figures import cohort_panel; \
	cohort_panel(make_cohort(SyntheticConfig(n_cases=40, q1=0.9, q0=0.1)), n=4, path='docs/img/synthetic_panel.png'); \
	cohort_panel(make_cohort(SyntheticConfig(n_cases=8, dim=3, q1=0.9, q0=0.1)), n=4, path='docs/img/synthetic_panel_3d.png')"
