"""What a batch scheduler tells a process through its environment (Slurm, Kubernetes),
read in one place.

- ``job_id``: which job a process belongs to, for a run folder's lease: Slurm's
  ``SLURM_ARRAY_JOB_ID_SLURM_ARRAY_TASK_ID`` (or ``SLURM_JOB_ID``), or the pod's name
  (``HOSTNAME``) inside Kubernetes.
- ``task_index``: the index ``--shard=auto`` takes as its shard: Slurm's
  ``SLURM_ARRAY_TASK_ID`` itself, or a Kubernetes Indexed Job's ``JOB_COMPLETION_INDEX``.
- ``array_min``, ``array_max``: Slurm's ``SLURM_ARRAY_TASK_MIN`` and ``_MAX``, the
  smallest and largest task IDs of the array, to warn of runs before or past them that
  no task trains (``--array=1-18`` leaves run 0 out).
- ``shard_count``: ``TFGAN_EXP_SHARDS``, the number of shards a job file splits its grid
  into (when the command does not say ``--shard=auto/N``).
- ``invocation``: ``TFGAN_EXP_INVOCATION``, a token the job files set that a requeued
  task or a retried pod carries again, so that ``--overwrite`` happens once per token.

Nothing here imports TensorFlow.
"""
import os
from typing import Optional

from tfgan_exp.config import UsageError

SHARDS_VARIABLE = "TFGAN_EXP_SHARDS"
INVOCATION_VARIABLE = "TFGAN_EXP_INVOCATION"


def job_id(environ=None) -> str:
    """The scheduler's name for this job ('' outside Slurm and Kubernetes)."""
    environ = os.environ if environ is None else environ
    if environ.get("SLURM_ARRAY_JOB_ID") and environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{environ['SLURM_ARRAY_JOB_ID']}_{environ['SLURM_ARRAY_TASK_ID']}"
    if environ.get("SLURM_JOB_ID"):
        return environ["SLURM_JOB_ID"]
    if environ.get("KUBERNETES_SERVICE_HOST") and environ.get("HOSTNAME"):
        return environ["HOSTNAME"]  # the pod's name
    return ""


def _whole_number(name: str, environ) -> int:
    text = environ[name]
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{name}={text!r} is not a whole number") from None


def task_index(environ=None) -> Optional[int]:
    """This task's index in its job array or Indexed Job (>= 0), or None outside one.

    Slurm's task ID is taken as it is, never minus SLURM_ARRAY_TASK_MIN: a resubmitted
    subset (``--array=4,11``), a stepped array (``--array=0-34:2``) or one that does not
    start at 0 (``--array=3-5``) then trains exactly the shards its IDs name.
    """
    environ = os.environ if environ is None else environ
    for name in ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"):
        if environ.get(name, "") != "":
            index = _whole_number(name, environ)
            if index < 0:
                raise UsageError(f"{name}={index}: a task index is at least 0")
            return index
    return None


def _optional_whole_number(name: str, environ=None) -> Optional[int]:
    environ = os.environ if environ is None else environ
    if environ.get(name, "") == "":
        return None
    return _whole_number(name, environ)


def array_min(environ=None) -> Optional[int]:
    """SLURM_ARRAY_TASK_MIN, the smallest task ID of this Slurm array, or None outside one."""
    return _optional_whole_number("SLURM_ARRAY_TASK_MIN", environ)


def array_max(environ=None) -> Optional[int]:
    """SLURM_ARRAY_TASK_MAX, the largest task ID of this Slurm array, or None outside one."""
    return _optional_whole_number("SLURM_ARRAY_TASK_MAX", environ)


def shard_count(environ=None) -> Optional[int]:
    """TFGAN_EXP_SHARDS (>= 1), or None when it is not set."""
    environ = os.environ if environ is None else environ
    if environ.get(SHARDS_VARIABLE, "") == "":
        return None
    count = _whole_number(SHARDS_VARIABLE, environ)
    if count < 1:
        raise UsageError(f"{SHARDS_VARIABLE}={count}: the number of shards is at least 1")
    return count


def invocation(environ=None) -> str:
    """TFGAN_EXP_INVOCATION, or '' when it is not set."""
    environ = os.environ if environ is None else environ
    return environ.get(INVOCATION_VARIABLE, "")
