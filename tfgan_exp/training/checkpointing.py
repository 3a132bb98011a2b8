"""The training state on disk: what a checkpoint holds, when it is written, how it is read.

A checkpoint holds everything a run depends on: G and D (with batch-norm statistics and
spectral-norm vectors), both Adam optimizers' moments and iteration counts, and the
running sums of this epoch's logged means. The global step is the generator
optimizer's iteration count; since the data and noise of step s depend only on
(seed, s), nothing else is needed to continue exactly. Checkpoints are named by global
step (``ckpt-<step>``); TensorFlow writes the data files first and then renames the
index, so a write cut short leaves the previous checkpoint as the newest. When the
``checkpoint`` state file that lists them is missing, the newest readable ``ckpt-N`` in
the folder is restored all the same.
"""
import os
import sys
from typing import List, Optional

import tensorflow as tf

from tfgan_exp.runtime import stopping
from tfgan_exp.config import UsageError
from tfgan_exp.rundir import complete_checkpoints


class TrainingState:
    """The checkpoint of one GAN, kept in ``directory`` (the newest ``keep``).

    ``restore_directory`` (default: ``directory``) is where a resume reads from: a
    non-chief worker saves into a directory of its own but resumes from the chief's, so
    that every worker starts from the same step.
    """

    def __init__(self, gan, directory: str, keep: int, restore_directory: str = ""):
        self.gan = gan
        _list_unlisted_checkpoints(directory)  # before the manager reads that list
        self.checkpoint = tf.train.Checkpoint(
            generator=gan.generator, discriminator=gan.discriminator,
            g_optimizer=gan.g_optimizer, d_optimizer=gan.d_optimizer,
            trackers=dict(gan.trackers))
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=keep)
        self.restore_manager = (
            tf.train.CheckpointManager(self.checkpoint, restore_directory, max_to_keep=keep)
            if restore_directory and restore_directory != directory else self.manager)

    @property
    def step(self) -> int:
        """Global steps done: one generator update each."""
        return int(self.gan.g_optimizer.iterations.numpy())

    def save(self) -> str:
        return self.manager.save(checkpoint_number=self.step)

    def restore(self) -> int:
        """Restores the newest readable checkpoint; returns its global step (0 if none).

        A damaged newest checkpoint (truncated, wrong shapes, another configuration) is
        reported and the one before it tried; if none can be read the run stops rather
        than silently starting again from scratch.
        """
        # Without a state file (a non-chief worker reads the chief's folder, which this
        # process does not repair) the files themselves say which checkpoints there are.
        paths = list(reversed(self.restore_manager.checkpoints
                              or complete_checkpoints(self.restore_manager.directory)))
        for number, path in enumerate(paths):
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
                return self.step
            # The reader raises these for truncated, foreign or mismatched files.
            except (tf.errors.OpError, AssertionError, ValueError, IndexError, KeyError) as error:
                reason = str(error).strip().splitlines()[0][:200]
                fallback = (f"falling back to {paths[number + 1]}" if number + 1 < len(paths)
                            else "no older checkpoint to fall back to")
                print(f"warning: checkpoint {path} cannot be restored ({type(error).__name__}:"
                      f" {reason}); {fallback}", file=sys.stderr)
        if paths:
            raise UsageError(f"no checkpoint in {self.restore_manager.directory} can be "
                             "restored; "
                             "move the run directory away, or pass --overwrite to delete it "
                             "and start again")
        return 0

    def _tracker_variables(self) -> List[tf.Variable]:
        """The epoch-mean trackers' variables (totals and counts), in a fixed order."""
        return [v for t in self.gan.trackers.values() for v in t.variables]

    def tracker_values(self) -> List:
        """Current values of the epoch-mean trackers' variables (to carry across a reset)."""
        return [v.numpy() for v in self._tracker_variables()]

    def set_tracker_values(self, values) -> None:
        for variable, value in zip(self._tracker_variables(), values):
            variable.assign(value)


def _list_unlisted_checkpoints(directory: str) -> None:
    """Writes the ``checkpoint`` state file when it is missing but checkpoints are there,
    so that CheckpointManager restores, and in time deletes, them as its own."""
    if os.path.exists(os.path.join(directory, "checkpoint")):
        return
    found = complete_checkpoints(directory)
    if found:
        tf.compat.v1.train.update_checkpoint_state(directory, found[-1],
                                                   all_model_checkpoint_paths=found)
        print(f"note: {directory} had no 'checkpoint' state file; it now lists the "
              f"{len(found)} checkpoint(s) found there", file=sys.stderr)


class StopSignals:
    """While active, SIGTERM and SIGINT are recorded instead of stopping us at once
    (``stopping.deferred``); ``received`` is the signal, or None.

    Training polls ``received`` after every step, finishes that step, saves and exits:
    a preempted or Ctrl-C'd run loses no finished step.
    """

    def __init__(self):
        self._block = None
        self._final: Optional[int] = None

    @property
    def received(self) -> Optional[int]:
        return stopping.received() if self._block is not None else self._final

    def __enter__(self):
        self._block = stopping.deferred()
        self._block.__enter__()
        return self

    def __exit__(self, *exc):
        self._final = stopping.received()
        block, self._block = self._block, None
        block.__exit__(*exc)


class ClusterStop:
    """A signal to any worker stops every worker at one agreed step (multiworker, TPU).

    A worker that stopped alone would leave the others waiting at the next all-reduce,
    so after every training call each worker contributes the signal it received (0 for
    none) to one all-reduce (MAX) across the strategy's replicas: every worker learns
    at the same step that one was asked to stop, saves there and stops, and all exit
    with the same status. TensorFlow's PreemptionCheckpointHandler is not used: in TF
    2.21 it ignores SIGTERM on Google Cloud TPU and CPU VMs ("does not support") and
    watches maintenance events instead on GCE GPU VMs, and its own restore skips our
    fallback past a damaged checkpoint. This works the same on every platform, at the
    cost of one scalar all-reduce per training call.
    """

    def __init__(self, agree, signals: StopSignals):
        """``agree``: ``distribute.agreement(strategy)``, the cluster-wide maximum."""
        self.signals = signals
        self.agreed: Optional[int] = None  # the signal every worker stopped for
        self._agree = agree

    def poll(self) -> bool:
        """Call at the same point on every worker; True once the cluster must stop."""
        signum = int(self._agree(self.signals.received or 0))
        if signum:
            self.agreed = signum
        return bool(signum)


class StepCheckpointer(tf.keras.callbacks.Callback):
    """Saves within epochs: every ``every_steps`` global steps (0 = never) and on a signal.

    Epoch ends are left to the epoch recorder: it saves after the epoch's metrics line,
    or, for an epoch that is evaluated, before its evaluation, with the epoch's record in
    pending_epoch.json until the evaluation writes its line (a resumed run evaluates it
    first).
    It also puts back this epoch's running means when a run resumes mid-epoch (Keras
    resets them at the start of every epoch), so the resumed epoch's logged means equal
    the uninterrupted run's.
    """

    def __init__(self, state: TrainingState, steps_per_epoch: int, every_steps: int,
                 signals: StopSignals, guard, resumed_tracker_values=None,
                 cluster: Optional[ClusterStop] = None):
        super().__init__()
        self.state = state
        self.cluster = cluster
        self.steps_per_epoch = steps_per_epoch
        self.every_steps = every_steps
        self.signals = signals
        self.guard = guard
        self.resumed_tracker_values = resumed_tracker_values
        self._last_saved = state.step

    def on_epoch_begin(self, epoch, logs=None):
        if self.resumed_tracker_values is not None:
            self.state.set_tracker_values(self.resumed_tracker_values)
            self.resumed_tracker_values = None

    def on_train_batch_end(self, batch, logs=None):
        if self.guard.failure:
            return  # never save a diverged state
        step = self.state.step
        at_epoch_end = step % self.steps_per_epoch == 0
        # In a cluster every worker stops together or none does; alone, at once.
        stop = (self.cluster.poll() if self.cluster is not None
                else self.signals.received is not None)
        if stop:
            self.model.stop_training = True
        else:
            every = self.every_steps
            if not every or step // every <= self._last_saved // every:
                return  # no multiple of every_steps passed since the last save
        if not at_epoch_end:
            self.state.save()
            self._last_saved = step
