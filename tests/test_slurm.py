"""The Slurm job files on a real one-node Slurm on loopback (Debian's slurm-wlm 22.05):
preparation, array and report in order, a task preempted with its USR1 requeued alone
and resumed from its checkpoint, every run trained once, every attempt in the task's log;
and a task whose USR1 comes from its real time limit, requeued by its own script.

Skipped, with the reason, where Slurm cannot be installed or started (.ci/run installs
it, so CI runs this). Slurm holds a requeued task for its credentials' lifetime plus a
second before it may start again (its EligibleTime): 121 s by default, 21 s on this
test's cluster (``cred_expire=20``), so that a second requeue does not cost minutes.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import REPO, wait_for
from slurm_cluster import SlurmCluster
from tfgan_exp.rundir import RunDir

EPOCHS = 8


@pytest.fixture(scope="module")
def slurm():
    # Its own folder under /tmp: the munge user must reach it (pytest's are root's only).
    folder = tempfile.mkdtemp(prefix="tfgan-exp-slurm-")
    cluster = SlurmCluster(folder)
    why = cluster.start()
    if why:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(why)
    yield cluster
    cluster.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.starts_first
def test_a_study_on_a_real_slurm_with_a_preempted_task_requeued_alone(slurm, tmp_path,
                                                                      cache_dir):
    run_dir = tmp_path / "grid"
    flags = (f"--dataset=digits --g_loss=nonsat,hinge --epochs={EPOCHS} --image_size=16 "
             f"--width=4 --latent_dim=8 --eval_every=0 --cache_dir={cache_dir}")
    env = dict(os.environ, **slurm.env, RUN_DIR=str(run_dir), GRID_FLAGS=flags,
               PYTHON=sys.executable, LOG_DIR=str(tmp_path), CHECKPOINT_EVERY="5",
               # A site that exports nothing to jobs: the scripts must not need it.
               SBATCH_EXPORT="NONE")
    submitted = subprocess.run(
        ["bash", os.path.join(REPO, "jobs", "slurm_submit.sh"), "--cpus-per-task=1",
         "--mem=1G"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert submitted.returncode == 0, submitted.stderr
    grid_job, report_job = re.search(r"grid (\d+) \(2 tasks\) and its report (\d+)",
                                     submitted.stdout).groups()
    # The task holding the array's own job id (known once both run): a requeue of
    # "$SLURM_JOB_ID" there would requeue every task of the array.
    tasks = wait_for(lambda: (lambda found: found if all(
        f.get("JobState") in ("RUNNING", "COMPLETED") for f in found.values()) else None)(
        {i: slurm.job(f"{grid_job}_{i}") for i in range(2)}), "the tasks to run", 300, 0.5)
    preempted = next(i for i, fields in tasks.items() if fields.get("JobId") == grid_job)
    other = 1 - preempted

    def checkpointed(task):
        """The run folder task ``task`` trains, once it holds a checkpoint."""
        log = tmp_path / f"slurm-{grid_job}_{task}.out"
        found = re.search(r"-> (\S+)\n", log.read_text()) if log.exists() else None
        if found and list((tmp_path / found.group(1)).glob("checkpoints/ckpt-*.index")):
            return tmp_path / found.group(1)
        return None

    time_limited = submit_a_task_that_reaches_its_time_limit(tmp_path, env)
    folder = wait_for(lambda: checkpointed(preempted), "the task's checkpoint", 300, 0.5)
    subprocess.run(["scancel", "-b", "-s", "USR1", f"{grid_job}_{preempted}"], env=env,
                   check=True, timeout=30)
    wait_for(lambda: slurm.job(report_job).get("JobState") == "COMPLETED",
             "the report job to complete", 900, 0.5)
    # Only the preempted task was requeued; the other ran once.
    assert slurm.job(f"{grid_job}_{preempted}").get("Restarts") == "1"
    assert slurm.job(f"{grid_job}_{other}").get("Restarts") == "0"
    log = (tmp_path / f"slurm-{grid_job}_{preempted}.out").read_text()
    assert log.count("attempt ") == 2  # the log kept both attempts (--open-mode=append)
    assert f"requeueing {grid_job}_{preempted}" in log
    assert re.search(r"resuming \S+ at step [1-9]", log)
    other_log = (tmp_path / f"slurm-{grid_job}_{other}.out").read_text()
    assert other_log.count("attempt ") == 1 and "requeueing" not in other_log
    # Every run trained once: every epoch once; the preempted run in two attempts.
    runs = sorted(p for p in run_dir.iterdir() if (p / "config.json").exists())
    assert len(runs) == 2
    for path in runs:
        records = RunDir(str(path)).read_metrics()
        assert [r["epoch"] for r in records] == list(range(1, EPOCHS + 1)), path
        attempts = json.loads((path / "provenance.json").read_text())["attempts"]
        task = preempted if path == folder else other
        assert len(attempts) == (2 if task == preempted else 1), path
        assert {a["job"] for a in attempts} == {f"{grid_job}_{task}"}
    assert (run_dir / "report" / "report.md").exists()
    # The time limit's own USR1 (from slurmctld, not scancel): the task stopped its
    # child, requeued itself by its task id, and its second attempt finished.
    wait_for(lambda: slurm.job(time_limited).get("JobState") in ("COMPLETED", "FAILED",
                                                                  "TIMEOUT"),
             "the time-limited task to end", 300, 0.5)
    fields = slurm.job(time_limited)
    log = (tmp_path / f"slurm-limit-{time_limited.replace('_', '-')}.out").read_text()
    assert fields["JobState"] == "COMPLETED" and fields["Restarts"] == "1", log
    assert log.count("attempt ") == 2 and "stopped by SIGTERM" in log, log
    assert f"requeueing {time_limited}" in log and log.endswith("finished\n"), log
    assert "TIME LIMIT" not in log, log


STAND_IN = """#!/bin/bash
# Stands in for Python under jobs/slurm_grid.sh: its first attempt trains until a
# SIGTERM (exit 143, as run.py after its checkpoint), its second finishes at once.
if [ "${SLURM_RESTART_COUNT:-0}" = 0 ]; then
  trap 'echo "stopped by SIGTERM"; exit 143' TERM
  while true; do sleep 0.1; done
fi
echo finished
"""


def submit_a_task_that_reaches_its_time_limit(tmp_path, env):
    """Submits jobs/slurm_grid.sh as a one-task array with a two-minute limit, so that
    its USR1 (``--signal=B:USR1@120``) comes from Slurm's own time-limit check, within
    30 s of the start; Python is a stand-in that costs no CPU. Returns the task's id."""
    stand_in = tmp_path / "python-stand-in"
    stand_in.write_text(STAND_IN)
    stand_in.chmod(0o755)
    job = subprocess.run(
        ["sbatch", "--parsable", "--export=ALL", "--array=0", "--time=2", "--mem=64M",
         "--cpus-per-task=1", f"--output={tmp_path}/slurm-limit-%A-%a.out",
         os.path.join(REPO, "jobs", "slurm_grid.sh")], cwd=tmp_path,
        env=dict(env, PYTHON=str(stand_in)), capture_output=True, text=True, timeout=60)
    assert job.returncode == 0, job.stderr
    return f"{job.stdout.strip()}_0"
