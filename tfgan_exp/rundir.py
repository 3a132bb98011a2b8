"""The run directory: config.json, metrics.jsonl, samples/, TensorBoard events, checkpoints/.

Layout (one directory per run; running the same command again resumes it)::

  config.json               the resolved Config
  metrics.jsonl             one JSON object per finished epoch, in epoch order
  samples/epoch_NNNN.png    8x8 grid from a fixed noise batch, one per epoch
  events.out.tfevents.*     TensorBoard scalars and sample grids
  checkpoints/              the last few training states (tf.train.CheckpointManager)
  diverged.json             only for a run that diverged: where (epoch, step) and which
                            values were not finite, on which host and devices; a grid
                            skips such a run
  reference.json            what the metrics compare against: the set sizes, and the
                            anchor (held-out real images scored against the reference)
  provenance.json           every attempt at training the run: when, where (host, CPU,
                            devices), with which code, Python, TensorFlow, CUDA and cuDNN
  failed.json               only for a run whose last attempt crashed or was killed: when,
                            on which host, why; removed by the next attempt that succeeds
  pending_epoch.json        an epoch checkpointed whose evaluation has not ended yet: its
                            training record; a resumed run evaluates it first
  overwritten.json          which invocation (TFGAN_EXP_INVOCATION) last overwrote the run
  lease.lock, lease.json    the lease of the process training it (``lease``)
"""
import contextlib
import dataclasses
import datetime
import glob
import json
import os
import re
import shutil
import socket
import uuid
from typing import Dict, List, Optional, Sequence

import numpy as np

from tfgan_exp.config import RESUMABLE_SETTINGS, Config, UsageError


def check_writable(path: str) -> None:
    """Raises UsageError unless ``path`` is, or could be created as, a writable directory
    (it tries ``path``, or its nearest existing parent).

    It creates a file there and removes it: ``os.access`` alone says yes to root for
    ``/proc`` or a read-only mount. Nothing else is created: a run that never starts
    leaves nothing behind.
    """
    probe = os.path.abspath(path)
    if os.path.exists(probe) and not os.path.isdir(probe):
        raise UsageError(f"--run_dir={path}: exists and is not a directory")
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"--run_dir={path}: {probe} is not a writable directory; "
                         "choose a --run_dir you can write to")
    name = os.path.join(probe, f".tfgan_exp-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.remove(name)
    except OSError as error:
        raise UsageError(f"--run_dir={path}: cannot create a file in {probe} "
                         f"({error.strerror or error}); choose a --run_dir you can write "
                         "to") from None


def now_stamp() -> str:
    """The time now, UTC, ISO 8601 (as the run folder's records give it)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def checkpoint_step(path: str) -> int:
    """The global step in a checkpoint's name (``.../ckpt-280`` -> 280), -1 if none."""
    found = re.search(r"ckpt-(\d+)$", path)
    return int(found.group(1)) if found else -1


class RunDir:
    """Reads and writes one run directory. Only the chief process writes."""

    def __init__(self, path: str):
        self.path = path
        self.config_path = os.path.join(path, "config.json")
        self.metrics_path = os.path.join(path, "metrics.jsonl")
        self.samples_dir = os.path.join(path, "samples")
        self.checkpoint_dir = os.path.join(path, "checkpoints")
        self.diverged_path = os.path.join(path, "diverged.json")
        self.reference_path = os.path.join(path, "reference.json")
        self.provenance_path = os.path.join(path, "provenance.json")
        self.failed_path = os.path.join(path, "failed.json")
        self.pending_path = os.path.join(path, "pending_epoch.json")
        self.overwritten_path = os.path.join(path, "overwritten.json")

    def saved_config(self):
        """The Config this directory was written for, or None for a new directory."""
        if not os.path.exists(self.config_path):
            return None
        with open(self.config_path) as f:
            return json.load(f)

    def differences(self, config: Config) -> Dict[str, tuple]:
        """Settings, other than RESUMABLE_SETTINGS, whose saved value differs from config's.

        A setting the saved config lacks (written by an older version) counts as its
        default value.
        """
        saved = dict(dataclasses.asdict(Config()), **(self.saved_config() or {}))
        current = dataclasses.asdict(config)
        return {key: (saved.get(key), current.get(key))
                for key in sorted(set(saved) | set(current))
                if key not in RESUMABLE_SETTINGS and saved.get(key) != current.get(key)}

    def clash(self, config: Config) -> str:
        """Why ``config`` may not resume the run here (it has other settings), or ""."""
        if self.saved_config() is None:
            return ""
        differences = self.differences(config)
        if not differences:
            return ""
        listed = "; ".join(f"{k}: {old!r} there, {new!r} now"
                           for k, (old, new) in differences.items())
        return f"{self.path} holds a run with other settings ({listed})"

    def will_overwrite(self, config: Config, invocation: str = "") -> bool:
        """Whether ``config`` deletes the run here before training: ``--overwrite``,
        unless this folder was already overwritten by the same ``invocation`` token
        (a requeued task or a retried pod, which must resume that run instead)."""
        if not config.overwrite:
            return False
        if not invocation:
            return True
        try:
            with open(self.overwritten_path) as f:
                return json.load(f).get("invocation") != invocation
        except (OSError, ValueError, AttributeError):
            return True

    def prepare(self, config: Config, overwrite: bool = False, keep: Sequence[str] = (),
                invocation: str = "") -> None:
        """Creates the directory for ``config``, or checks that it may resume the one there.

        ``overwrite`` first deletes everything in the folder but the names in ``keep``
        (the lease of the process doing it) and records ``invocation`` (if any) in
        overwritten.json, so that the same invocation run again resumes (will_overwrite).
        """
        if overwrite and os.path.exists(self.path):
            for name in os.listdir(self.path):
                if name in keep:
                    continue
                entry = os.path.join(self.path, name)
                if os.path.isdir(entry) and not os.path.islink(entry):
                    shutil.rmtree(entry)
                else:
                    os.remove(entry)
        if overwrite and invocation:
            os.makedirs(self.path, exist_ok=True)
            write_atomically(self.overwritten_path, json.dumps(
                {"invocation": invocation, "when": now_stamp()}) + "\n")
        clash = self.clash(config)
        if clash:
            raise UsageError(f"{clash}. Use another --run_dir, or --overwrite to delete that "
                             "run and start again.")
        os.makedirs(self.samples_dir, exist_ok=True)
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        write_atomically(self.config_path, config.to_json() + "\n")

    def reference(self) -> Optional[dict]:
        """reference.json (``Scorer.describe``'s record), or None."""
        return read_json(self.reference_path)

    def write_reference(self, record: dict) -> None:
        write_atomically(self.reference_path, json.dumps(record, indent=2) + "\n")

    def attempts(self) -> List[dict]:
        """provenance.json's attempts, oldest first ([] for a run without one)."""
        return (read_json(self.provenance_path) or {}).get("attempts", [])

    def write_attempts(self, attempts: List[dict]) -> None:
        write_atomically(self.provenance_path,
                         json.dumps({"attempts": attempts}, indent=2) + "\n")

    def divergence(self) -> Optional[dict]:
        """Where and why the run diverged (``record_divergence``'s record), or None."""
        if not os.path.exists(self.diverged_path):
            return None
        with open(self.diverged_path) as f:
            return json.load(f)

    def record_divergence(self, record: dict) -> None:
        """Writes diverged.json: the run diverged; ``record`` says where and why."""
        write_atomically(self.diverged_path, json.dumps(record, indent=2) + "\n")

    def clear_divergence(self) -> None:
        if os.path.exists(self.diverged_path):
            os.remove(self.diverged_path)

    def failure(self) -> Optional[dict]:
        """Why the last attempt failed (``record_failure``'s record), or None."""
        return read_json(self.failed_path)

    def record_failure(self, why: str, **details) -> None:
        """Writes failed.json: the last attempt crashed or was killed; ``why`` says how."""
        os.makedirs(self.path, exist_ok=True)
        record = dict({"when": now_stamp(), "host": socket.gethostname(), "why": why},
                      **details)
        write_atomically(self.failed_path, json.dumps(record, indent=2) + "\n")

    def clear_failure(self) -> None:
        if os.path.exists(self.failed_path):
            os.remove(self.failed_path)

    def pending(self) -> Optional[dict]:
        """The training record of an epoch checkpointed but not yet evaluated, or None."""
        return read_json(self.pending_path)

    def write_pending(self, record: dict) -> None:
        write_atomically(self.pending_path, json.dumps(record) + "\n")

    def clear_pending(self) -> None:
        if os.path.exists(self.pending_path):
            os.remove(self.pending_path)

    def newest_checkpoint_step(self) -> int:
        """The global step of the newest checkpoint here, -1 if none; without TensorFlow.

        TensorFlow's ``checkpoint`` state file names it; when that file is missing (lost,
        or never renamed into place), the newest ``ckpt-N`` whose index and data files
        are there, as ``TrainingState.restore`` then uses.
        """
        try:
            with open(os.path.join(self.checkpoint_dir, "checkpoint")) as f:
                newest = re.search(r'^model_checkpoint_path: ".*ckpt-(\d+)"', f.read(), re.M)
            return int(newest.group(1)) if newest else -1
        except OSError:
            pass
        return max((checkpoint_step(p) for p in complete_checkpoints(self.checkpoint_dir)),
                   default=-1)

    def read_metrics(self) -> List[dict]:
        """The per-epoch records, skipping a last line cut short by a crash."""
        if not os.path.exists(self.metrics_path):
            return []
        records = []
        with open(self.metrics_path) as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    break
        return records

    def keep_metrics_through(self, epoch: int) -> None:
        """Drops records after ``epoch``: written by a run killed before its checkpoint."""
        records = self.read_metrics()
        kept = [r for r in records if r.get("epoch", 0) <= epoch]
        if os.path.exists(self.metrics_path):
            write_atomically(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def write_samples(self, epoch: int, grid: np.ndarray) -> str:
        """Writes uint8 [H, W, C] as samples/epoch_NNNN.png; returns the path."""
        import tensorflow as tf
        path = os.path.join(self.samples_dir, f"epoch_{epoch:04d}.png")
        write_atomically(path, tf.io.encode_png(grid).numpy(), binary=True)
        return path


def complete_checkpoints(directory: str) -> List[str]:
    """Checkpoint prefixes (``DIR/ckpt-N``) in ``directory`` with an index and at least
    one data file, oldest first (by step)."""
    prefixes = [p[:-len(".index")] for p in glob.glob(os.path.join(directory, "ckpt-*.index"))]
    whole = [p for p in prefixes if checkpoint_step(p) >= 0 and glob.glob(p + ".data-*")]
    return sorted(whole, key=checkpoint_step)


def read_json(path: str) -> Optional[dict]:
    """The JSON object in ``path``, or None when there is none (or it is not whole): the
    run folder's small records, and a lease's."""
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def image_grid(images: np.ndarray, rows: int = 8) -> np.ndarray:
    """uint8 [rows*cols, H, W, C] -> one uint8 image [rows*H, cols*W, C], row-major."""
    n, h, w, c = images.shape
    cols = n // rows
    return (images[:rows * cols].reshape(rows, cols, h, w, c)
            .transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c))


@contextlib.contextmanager
def written_atomically(path: str, suffix: str = ""):
    """Yields a temporary path to write; renames it to ``path`` once the block succeeds.

    Readers never see half a file. The temporary name is unique to this writer, so
    processes filling the same shared cache at once (the workers of a multi-worker run)
    each rename a whole file of their own and the last rename wins; a block that raises
    leaves no temporary behind. ``suffix`` ends the temporary name, for writers that
    insist on an extension (np.savez adds ".npz", Keras wants ".weights.h5").
    """
    temporary = f"{path}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{suffix}"
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_atomically(path: str, content, binary: bool = False) -> None:
    """Writes ``content`` to ``path`` atomically (see ``written_atomically``), synced."""
    with written_atomically(path) as temporary:
        with open(temporary, "wb" if binary else "w") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
