"""Which code, software and machine trained a run: one record per attempt.

A run's numbers depend on more than its settings: another TensorFlow, CUDA or CPU takes
other paths from the same seed (runs are bit-identical only on one machine with
``--deterministic``), and a faulty device can make NaNs that are not the loss's doing.
So every attempt at training a run (the first, and each resume) is recorded in the run
folder's ``provenance.json``, and the report lists what its runs were made with and
warns when the runs of one comparison differ.
"""
import os
import platform
import socket
import subprocess
from typing import List

import tfgan_exp
from tfgan_exp.runtime import scheduler
from tfgan_exp.rundir import now_stamp

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(tfgan_exp.__file__)))


def code_version() -> dict:
    """The package's version, and its git commit and whether the tree had uncommitted
    changes to tracked files, when it runs from a git checkout; else, in the Docker
    image, the commit it was built from (``TFGAN_EXP_GIT_COMMIT``, the build's
    ``GIT_COMMIT``: ``SHA`` or ``SHA-dirty``), if given."""
    version = {"version": tfgan_exp.__version__}
    try:
        commit = subprocess.run(["git", "-C", PACKAGE_ROOT, "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            status = subprocess.run(
                ["git", "-C", PACKAGE_ROOT, "status", "--porcelain", "--untracked-files=no"],
                capture_output=True, text=True, timeout=10)
            version.update(git_commit=commit.stdout.strip(),
                           git_dirty=bool(status.stdout.strip()))
            return version
    except (OSError, subprocess.SubprocessError):
        pass  # no git: the image's build argument, else the version number
    built = os.environ.get("TFGAN_EXP_GIT_COMMIT", "")  # "SHA" or "SHA-dirty"
    if built:
        version.update(git_commit=built.removesuffix("-dirty"),
                       git_dirty=built.endswith("-dirty"), source="image build")
    return version


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what Python knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def devices() -> List[str]:
    """The accelerators TensorFlow uses, named ('GPU:0 NVIDIA H100 80GB HBM3'), else
    ['CPU']. Call only after the strategy exists (listing devices starts TensorFlow's
    runtime, which a multi-worker strategy must configure first)."""
    import tensorflow as tf
    named = []
    for kind in ("GPU", "TPU"):
        for index, device in enumerate(tf.config.list_physical_devices(kind)):
            details = tf.config.experimental.get_device_details(device) if kind == "GPU" else {}
            named.append(f"{kind}:{index} {details.get('device_name', '')}".strip())
    return named or ["CPU"]


def software() -> dict:
    """Python, TensorFlow, and the CUDA and cuDNN TensorFlow was built with (None on a
    build without CUDA)."""
    import tensorflow as tf
    build = tf.sysconfig.get_build_info()
    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "cuda": build.get("cuda_version") if build.get("is_cuda_build") else None,
            "cudnn": build.get("cudnn_version") if build.get("is_cuda_build") else None}


def machine() -> dict:
    """Where this process runs: host, CPU model and devices."""
    return {"host": socket.gethostname(), "cpu": cpu_model(), "devices": devices()}


class Attempt:
    """One attempt at training a run, recorded in its folder as it starts and ends.

    Args:
      run_dir: the run's RunDir (only the chief process records).
      strategy: the resolved strategy's name; replicas: its replica count.
      first_step: the global step it starts from (0, or the restored checkpoint's).
    """

    def __init__(self, run_dir, strategy: str, replicas: int, first_step: int,
                 deterministic: bool):
        self.run_dir = run_dir
        self.record = dict(
            started=now_stamp(), ended=None, outcome=None, first_step=first_step, last_step=None,
            pid=os.getpid(), job=scheduler.job_id() or None, **machine(), strategy=strategy,
            replicas=replicas, deterministic=deterministic, code=code_version(),
            **software())
        self.machine = {k: self.record[k] for k in ("host", "cpu", "devices")}
        self._attempts = run_dir.attempts() + [self.record]
        run_dir.write_attempts(self._attempts)

    def end(self, outcome: str, last_step: int) -> None:
        """Records how the attempt ended: finished, diverged, stopped (a signal)."""
        self.record.update(ended=now_stamp(), outcome=outcome, last_step=last_step)
        self.run_dir.write_attempts(self._attempts)


class _Unrecorded:
    """Where no attempt is recorded (a non-chief worker): ends without a word."""
    machine: dict = {}

    def end(self, outcome: str, last_step: int) -> None:
        pass


NOT_RECORDED = _Unrecorded()
