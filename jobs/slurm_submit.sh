#!/bin/bash
# Submits the grid (jobs/slurm_grid.sh) and, once every task has ended, the report.
#   bash jobs/slurm_submit.sh        (environment as for slurm_grid.sh: RUN_DIR, ...)
set -euo pipefail
RUN_DIR=${RUN_DIR:-runs/article}
PYTHON=${PYTHON:-python}
export RUN_DIR PYTHON
grid_job=$(sbatch --parsable --export=ALL jobs/slurm_grid.sh)
sbatch --dependency=afterany:"$grid_job" --job-name=tfgan-report --time=1:00:00 \
  --output=slurm-report-%j.out --wrap "$PYTHON -m tfgan_exp.report $RUN_DIR"
echo "submitted grid $grid_job and its report"
