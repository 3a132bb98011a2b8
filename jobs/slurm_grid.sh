#!/bin/bash
# The article's study on a Slurm cluster: one job-array task per run, all writing into
# one shared folder; submit with jobs/slurm_submit.sh, which adds the report after it.
#
#   sbatch jobs/slurm_grid.sh            (from the repository's root, on shared storage)
#
# Task i trains shard i of the grid (--shard=auto takes SLURM_ARRAY_TASK_ID itself): one
# run per task, so keep --array=0-(runs - 1) (here 2 datasets x 3 losses x 3 seeds = 18
# runs; with an array too small for the grid, or one from 1, each task warns which
# runs no task trains). Resubmit the tasks that failed by their IDs (sbatch
# --array=4,11 ...): they train exactly runs 4 and 11 (positions in the grid as
# GRID_FLAGS lists it now: after changing GRID_FLAGS, submit the whole array again;
# finished runs are skipped). For fewer tasks with several runs each, submit
# --array=0-(N-1) with TFGAN_EXP_SHARDS=N in the environment (sbatch --export=ALL,...).
# A task past the last shard has nothing to train and ends at once with status 0.
# A task that is requeued or submitted again resumes or skips its runs.
# Resources are the site's, not the script's: jobs/slurm_submit.sh passes its arguments
# to sbatch (bash jobs/slurm_submit.sh --gres=gpu:1 --cpus-per-task=8 --mem=32G), and so
# does sbatch itself on its command line. Each attempt is appended to one log per task.
#SBATCH --job-name=tfgan-grid
#SBATCH --array=0-17
#SBATCH --time=48:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
#SBATCH --output=slurm-%A_%a.out
#SBATCH --open-mode=append
set -euo pipefail

RUN_DIR=${RUN_DIR:-runs/article}
GRID_FLAGS=${GRID_FLAGS:---dataset=cifar10,stl10 --g_loss=minimax,nonsat,hinge --seeds=3}
# The Python of the study: VENV's (a virtual environment, activated), else PYTHON, else
# the first python on PATH. slurm_submit.sh passes an absolute PYTHON, so a site that
# exports nothing to jobs (SBATCH_EXPORT=NONE) still finds it.
if [ -n "${VENV:-}" ]; then
  # shellcheck disable=SC1091
  source "$VENV/bin/activate"
fi
PYTHON=${PYTHON:-python}
# This task as Slurm names it: a requeue must name the task, not the array's job id
# (which one task carries, and which requeues every task of the array).
TASK=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}
TASK=${TASK:-${SLURM_JOB_ID:-}}
echo "attempt $(( ${SLURM_RESTART_COUNT:-0} + 1 )) of task ${TASK:-(not under Slurm)} on" \
  "$(hostname) at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
# This task's token, carried again by a requeue: --overwrite in GRID_FLAGS deletes a run
# once per task, not again at every requeue (the requeued task resumes it).
export TFGAN_EXP_INVOCATION=${TFGAN_EXP_INVOCATION:-${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-}}${SLURM_ARRAY_TASK_ID:+_$SLURM_ARRAY_TASK_ID}}
# A SIGKILL (the node fails, the grace after SIGTERM runs out) loses the steps since the
# last checkpoint: at most CHECKPOINT_EVERY steps (or the epoch, if shorter: every
# epoch's end is saved too), i.e. CHECKPOINT_EVERY x the step time. Each save writes
# ~80 MB (STL-10: ~100 MB: G, D and both Adam optimizers' moments), from every task onto
# the shared storage. A CIFAR-10 step is ~205 GFLOP (64 images x 3.2): a GPU that
# sustains 10 TFLOP/s on it takes ~20 ms, tens of ms in any case, so 10000 steps are
# minutes (3.4 min at 20 ms, 8.3 min at 50 ms); 1000 would be a save every 20 s per
# task. On a CPU (472 ms per CIFAR-10 step on 2 cores) 10000 steps are 79 min: set
# CHECKPOINT_EVERY to the minutes you can afford to lose divided by the step time that
# `python -m tfgan_exp.bench` reports (train_step_ms): 10 min / 472 ms = ~1300 steps.
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-10000}

# 120 s before the time limit Slurm sends USR1 (--signal above) to this script, which
# asks run.py to save a checkpoint and stop (SIGTERM: exit 143) and then requeues the
# task (Slurm requeues on preemption, not at a time limit), which resumes from it. A
# SIGTERM from scancel or preemption is passed on too, without a requeue of our own.
# Slurm may send USR1 up to a minute early; a run that has not saved when the limit and
# KillWait run out ends as TIMEOUT: submitting the same tasks again resumes them from
# their last checkpoint (at most CHECKPOINT_EVERY steps lost).
time_limit=0
stopping=0
child=""
stop_child() { if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null || true; fi; }
trap 'time_limit=1; stopping=1; stop_child' USR1
trap 'stopping=1; stop_child' TERM
$PYTHON "${TFGAN_EXP_REPO:-.}/run.py" $GRID_FLAGS --run_dir="$RUN_DIR" --shard=auto \
  --checkpoint_every_steps="$CHECKPOINT_EVERY" ${EXTRA_FLAGS:-} &
child=$!
# A signal that came while run.py was being started found no child to pass it to.
if [ "$stopping" = 1 ]; then stop_child; fi
status=0
wait "$child" || status=$?
while [ "$status" -gt 128 ] && kill -0 "$child" 2>/dev/null; do
  status=0  # a trap interrupted the wait: wait for run.py's own exit status
  wait "$child" || status=$?
done
if [ "$time_limit" = 1 ] && [ "$status" -eq 143 ] && [ -n "$TASK" ]; then
  echo "stopped with a checkpoint before the time limit; requeueing $TASK"
  scontrol requeue "$TASK"
fi
exit "$status"
