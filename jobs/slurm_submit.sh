#!/bin/bash
# Submits, one after another: the data preparation (once, so that the array's tasks do
# not all download into the shared folder at the same moment), the grid
# (jobs/slurm_grid.sh) as an array of one task per run, and, once every task of the grid
# has ended, the report.
#   bash jobs/slurm_submit.sh [SBATCH OPTIONS...]
#   e.g. bash jobs/slurm_submit.sh --gres=gpu:1 --cpus-per-task=8 --mem=32G --partition=gpu
# The options go to the grid's array: the site's resources, never fixed here (a node
# without GPUs refuses --gres=gpu). Environment: RUN_DIR, GRID_FLAGS, VENV or PYTHON as
# for slurm_grid.sh; DATASETS (what to prepare; default: GRID_FLAGS' --dataset, else
# cifar10,stl10); LOG_DIR (the jobs' logs; default: here).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
RUN_DIR=${RUN_DIR:-runs/article}
GRID_FLAGS=${GRID_FLAGS:---dataset=cifar10,stl10 --g_loss=minimax,nonsat,hinge --seeds=3}
LOG_DIR=${LOG_DIR:-.}
if [ -n "${VENV:-}" ]; then
  # shellcheck disable=SC1091
  source "$VENV/bin/activate"
fi
# An absolute path: the jobs find it even where the site exports nothing to them.
PYTHON=$(command -v "${PYTHON:-python}") || {
  echo "error: no ${PYTHON:-python} to run the study: set VENV or PYTHON" >&2; exit 2; }
DATASETS=${DATASETS:-$(grep -o -- "--dataset=[^ ]*" <<<"$GRID_FLAGS" | cut -d= -f2 || true)}
DATASETS=${DATASETS:-cifar10,stl10}
# One task per run of the grid: the array covers it exactly, whatever GRID_FLAGS holds.
# A grid that fails its check (a bad flag, a clash) says why on stderr, and nothing is
# submitted.
if ! listing=$("$PYTHON" "$repo/run.py" $GRID_FLAGS --run_dir="$RUN_DIR" --dry_run); then
  exit 2
fi
runs=$(grep -c . <<<"$listing" || true)
export RUN_DIR GRID_FLAGS PYTHON TFGAN_EXP_REPO="$repo"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"  # python -m tfgan_exp.report, from here
# --export=ALL on every job: it overrides a site's SBATCH_EXPORT=NONE for these jobs.
prepare_job=$(sbatch --parsable --export=ALL --job-name=tfgan-prepare --time=4:00:00 \
  --output="$LOG_DIR/slurm-prepare-%j.out" \
  --wrap "$PYTHON -m tfgan_exp.prepare --dataset=$DATASETS" --chdir="$repo")
grid_job=$(sbatch --parsable --export=ALL --dependency=afterok:"$prepare_job" \
  --kill-on-invalid-dep=yes --array=0-$(( runs - 1 )) \
  --output="$LOG_DIR/slurm-%A_%a.out" "$@" "$repo/jobs/slurm_grid.sh")
report_job=$(sbatch --parsable --export=ALL --dependency=afterany:"$grid_job" \
  --job-name=tfgan-report --time=1:00:00 --output="$LOG_DIR/slurm-report-%j.out" \
  --chdir="$PWD" --wrap "$PYTHON -m tfgan_exp.report $RUN_DIR" )
echo "submitted data preparation $prepare_job, grid $grid_job ($runs tasks) and its" \
  "report $report_job"
