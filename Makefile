# The two commands a newcomer types: `make demo` and `make test`. Both set up .venv first.
# On a Linux machine with an NVIDIA GPU add GPU=1 (`make demo GPU=1`): TensorFlow is then
# installed with its CUDA libraries (requirements-gpu.txt); without them it uses the CPU.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
GPU ?= 0
REQUIREMENTS := $(if $(filter 1,$(GPU)),requirements-gpu.txt,requirements.txt)
STAMP := $(VENV)/.installed$(if $(filter 1,$(GPU)),-gpu,)-stamp
ARGS ?=

.PHONY: install demo test test-fast test-image study bench clean clean-runs

$(STAMP): requirements.txt requirements-gpu.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r $(REQUIREMENTS) -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

# Trains the default digits GAN offline (a few minutes on a 2-core CPU).
demo: $(STAMP)
	$(PY) run.py $(ARGS)

# The suite runs in TEST_WORKERS pytest processes (pytest-xdist), one per core (at most
# 8): on 2 cores, 3 workers took 20% more CPU time than 2 (1004 against 828 s: more
# processes than cores slow each other) and longer (557 against 488 s). Tests are
# handed out one at a time, longest first (tests/conftest.py), so that no worker holds
# a queue of long tests while another is idle; the Slurm test, which waits on Slurm,
# starts first.
TEST_WORKERS ?= $(shell n=$$(nproc); echo $$(( n < 8 ? n : 8 )))
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --maxschedchunk=1
test: $(STAMP)
	$(PYTEST) -m "not image"

# The unit tests only: every test not marked slow (those train, or start training
# processes, end to end). For the edit-test loop; `make test` is what CI runs.
test-fast: $(STAMP)
	$(PYTEST) -m "not slow and not image"

# The Docker image built and run on a Docker engine (tests/test_docker.py): minutes of
# downloads, so apart from `make test`; CI runs both. Skipped, saying why, with no engine.
test-image: $(STAMP)
	$(PY) -m pytest -q -m image tests/test_docker.py

# Removes the virtual environment only: runs/ holds results, which `make clean-runs`
# removes, when asked for by name.
clean:
	rm -rf $(VENV)

clean-runs:
	rm -rf runs

# The article's comparison, offline: the three generator losses x 5 seeds on digits,
# 30 epochs each (in the 60-epoch study every curve was within 0.2 of its epoch-60 score
# by epoch 30, and the saturating loss's collapses come before epoch 15), a random
# search of 7 settings per loss (10 epochs each: 7 is the fewest at which the paired
# test of each loss against nonsat, 2 tests corrected together, can find a difference
# at 0.05), and each loss's best search setting again with 5 fresh seeds (the tuned
# re-run), all in one queue (python -m tfgan_exp.study: the tuned phase joins it when
# the search has ended); then the report, copied to docs/. PARALLEL runs train at once
# (default: one per CPU core). Runs go to runs/digits-study (resumable: run it again
# after a stop). Prints its wall time, its compute floor (the epochs' seconds over the
# slots) and their ratio; runs/digits-study/timeline.json shows where the time went.
# A study with a run that failed (crashed, killed) or that another process held exits
# non-zero before the report; its last line names those runs. STUDY_MARGIN: the
# digits-score difference of no practical importance (half a point: 5% of real digits').
STUDY_DIR ?= runs/digits-study
PARALLEL ?= $(shell nproc)
STUDY_MARGIN ?= 0.5
study: $(STAMP)
	@start=$$(date +%s); \
	if ! $(PY) -m tfgan_exp.study --dataset=digits --run_dir=$(STUDY_DIR) \
	       --parallel=$(PARALLEL) $(ARGS) \
	       --phase="losses: --g_loss=minimax,nonsat,hinge --seeds=5 --epochs=30" \
	       --phase="search: --g_loss=minimax,nonsat,hinge --search=7 --epochs=10" \
	       --phase="tuned: --g_loss=minimax,nonsat,hinge --seed=100,101,102,103,104 \
	                --epochs=10 --tuned_from=search"; then \
	  echo "make study: stopped before the report: the study did not end cleanly (a run" \
	    "failed or was held by another process, or it was stopped); its last line" \
	    "above names those runs. Run make study again once they can train." >&2; \
	  exit 1; \
	fi; \
	$(PY) -m tfgan_exp.report $(STUDY_DIR) --equivalence_margin=$(STUDY_MARGIN) && \
	rm -rf docs/digits-study && mkdir -p docs && cp -r $(STUDY_DIR)/report docs/digits-study && \
	echo "make study: $$($(PY) -m tfgan_exp.timeline $(STUDY_DIR)/timeline.json \
	  --since=$$start | tail -1), $(PARALLEL) run(s) at once"

# The training-step benchmark against a plain tf.function loop and PyTorch.
bench: $(STAMP)
	$(PY) -m pip install --quiet -r requirements-bench.txt
	$(PY) -m tfgan_exp.bench $(ARGS)
