#!/bin/bash
# Submits, one after another: the data preparation (once, so that the array's tasks do
# not all download into the shared folder at the same moment), the grid
# (jobs/slurm_grid.sh), and, once every task of the grid has ended, the report.
#   bash jobs/slurm_submit.sh        (environment as for slurm_grid.sh: RUN_DIR, ...;
#                                     DATASETS: what to prepare, default cifar10,stl10)
set -euo pipefail
RUN_DIR=${RUN_DIR:-runs/article}
PYTHON=${PYTHON:-python}
# The datasets to prepare: those of GRID_FLAGS when it names them.
DATASETS=${DATASETS:-$(grep -o -- "--dataset=[^ ]*" <<<"${GRID_FLAGS:-}" | cut -d= -f2 || true)}
DATASETS=${DATASETS:-cifar10,stl10}
export RUN_DIR PYTHON
prepare_job=$(sbatch --parsable --job-name=tfgan-prepare --time=4:00:00 \
  --output=slurm-prepare-%j.out --wrap "$PYTHON -m tfgan_exp.prepare --dataset=$DATASETS")
grid_job=$(sbatch --parsable --dependency=afterok:"$prepare_job" --kill-on-invalid-dep=yes \
  --export=ALL jobs/slurm_grid.sh)
sbatch --dependency=afterany:"$grid_job" --job-name=tfgan-report --time=1:00:00 \
  --output=slurm-report-%j.out --wrap "$PYTHON -m tfgan_exp.report $RUN_DIR"
echo "submitted data preparation $prepare_job, grid $grid_job and its report"
