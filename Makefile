# Two commands on a fresh machine: `make demo` and `make test`.
# CPU machines get the local CPU torch wheel; GPU users keep theirs: `make TORCH_SPEC= demo`
# (empty TORCH_SPEC = install nothing for torch, use the torch already in PYTHON's environment).
PYTHON      ?= python3
VENV        ?= .venv
TORCH_SPEC  ?= torch==2.13.0
BIN         := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo audit app lint test test-fast bench bench-quick clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(if $(TORCH_SPEC),,--system-site-packages) $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(if $(TORCH_SPEC),$(BIN)/pip install --quiet "$(TORCH_SPEC)")
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/.installed

# The main job on the embedded synthetic default: data -> train -> explain -> dry-run publish.
demo: install
	$(BIN)/python scripts/prepare_data.py configs/demo_data.yaml
	$(BIN)/python scripts/train.py configs/demo.yaml --overwrite_output_dir true
	$(BIN)/python scripts/explain.py configs/demo_explain.yaml
	$(BIN)/python scripts/publish.py --model outputs/demo --dry_run --export_dir outputs/demo/hub_export --examples_from data/bps
	@echo ""
	@echo "Demo done. Data: data/bps (split_report.json)  Model + metrics: outputs/demo (bps_results.json, figures/)"
	@echo "Explanations: outputs/demo/explain (figures/, explain_metrics.json)  Hub folder: outputs/demo/hub_export (README.md = model card)"

# Accuracy on new plates: the plate-leak world (one plate per condition, a signature per plate), then one model per
# fold held out by plate, by field and at random (README, "Accuracy on new plates").
audit: install
	$(BIN)/python scripts/prepare_data.py configs/audit_data.yaml
	$(BIN)/python scripts/audit.py configs/audit.yaml --overwrite_output_dir true

# The interactive app on the demo model (after `make demo`, which puts example crops in outputs/demo/examples)
app: install
	$(BIN)/python scripts/app.py --model outputs/demo --port 7860

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test: install lint
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python bench/run_all.py

bench-quick: install
	$(BIN)/python bench/run_all.py --quick

clean:
	rm -rf outputs data/raw data/bps data/audit .pytest_cache
