"""``run(config)``: build everything under the strategy, resume, fit, record each epoch."""
import contextlib
import dataclasses
import os
import signal
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import tensorflow as tf

from tfgan_exp import data
from tfgan_exp.runtime import distribute, lease as lease_lib, provenance, scheduler, stopping, timeline
from tfgan_exp.gan import networks
from tfgan_exp.training import summaries
from tfgan_exp.evaluation.evaluator import EpochEvaluator, EvaluationAbandoned, make_scorer
from tfgan_exp.training.checkpointing import ClusterStop, StepCheckpointer, StopSignals, TrainingState
from tfgan_exp.config import NON_RESULT_SETTINGS, Config, TrainingDiverged, UsageError
from tfgan_exp.gan.model import GAN
from tfgan_exp.gan.losses import loss_pair
from tfgan_exp.rundir import RunDir, check_writable, image_grid
from tfgan_exp.runtime.replicated import ReplicatedMap

MIXED_POLICIES = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
SAMPLE_GRID = 64  # fixed-noise images per sample grid (8 x 8)

# An evaluator returns metrics to add to the epoch's record.
Evaluator = Callable[[], Dict[str, float]]


def build_gan(config: Config, image_shape) -> GAN:
    """The compiled GAN with both optimizers' state created; call inside strategy.scope().

    The optimizers are built eagerly so that a checkpoint restores their moments and
    iteration counts (a lazily built optimizer silently skips them).
    """
    previous_policy = tf.keras.mixed_precision.global_policy()
    if config.mixed_precision:
        tf.keras.mixed_precision.set_global_policy(MIXED_POLICIES[config.mixed_precision])
    try:  # layers keep the policy they were built under
        generator = networks.build_generator(image_shape, config.latent_dim, config.width)
        discriminator = networks.build_discriminator(image_shape, config.width,
                                                   config.spectral_norm)
    finally:
        tf.keras.mixed_precision.set_global_policy(previous_policy)
    gan = GAN(generator, discriminator,
              loss_pair(config.g_loss, config.d_loss, config.gp_weight),
              global_batch_size=config.batch_size, d_steps=config.d_steps)
    g_optimizer = tf.keras.optimizers.Adam(config.lr_g, config.beta1, config.beta2)
    d_optimizer = tf.keras.optimizers.Adam(config.lr_d, config.beta1, config.beta2)
    if config.mixed_precision == "fp16":  # dynamic loss scaling, one scale per network
        g_optimizer = tf.keras.mixed_precision.LossScaleOptimizer(g_optimizer)
        d_optimizer = tf.keras.mixed_precision.LossScaleOptimizer(d_optimizer)
    g_optimizer.build(generator.trainable_variables)
    d_optimizer.build(discriminator.trainable_variables)
    gan.compile(g_optimizer, d_optimizer, steps_per_execution=config.steps_per_execution,
                jit_compile=config.jit_compile)
    return gan


# Raised by a stop signal (SIGTERM, SIGINT): see ``stopping``.
Interrupted = stopping.Interrupted


def stopped_after(signum: int, step: int, checkpoint: Optional[str]) -> Interrupted:
    """The stop of a run that has trained: its last step was checkpointed."""
    return Interrupted(signum, f"stopped by {signal.Signals(signum).name} after step {step}; "
                       f"saved {checkpoint}. Run the same command to resume.")


class NonFiniteGuard(tf.keras.callbacks.Callback):
    """Stops training at the first step whose logged values are not all finite.

    Keras's TerminateOnNaN watches only a key named ``loss``; a GAN logs ``d_loss``,
    ``g_loss`` and gradient norms, so every key is checked, after every step. ``where``
    then says where and why, as diverged.json records it.
    """

    def __init__(self, state: TrainingState):
        super().__init__()
        self.state = state
        self.failure: Optional[str] = None
        self.where: Optional[dict] = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        bad = {k: float(v) for k, v in (logs or {}).items() if not np.isfinite(float(v))}
        if bad and self.failure is None:
            # The global step, not ``batch``: that counts from the start of this fit,
            # which for a run resumed mid-epoch is not the epoch's start.
            step = self.state.step
            listed = ", ".join(f"{k} = {v}" for k, v in sorted(bad.items()))
            self.failure = (f"training diverged in epoch {self._epoch + 1}, step {step}: "
                            f"{listed} (epoch means so far)")
            # JSON has no NaN or infinity: the values are kept as their names.
            self.where = {"epoch": self._epoch + 1, "step": step,
                          "values": {k: str(v) for k, v in sorted(bad.items())}}
            self.model.stop_training = True


class EpochRecorder(tf.keras.callbacks.Callback):
    """At each epoch's end: draw samples, checkpoint, evaluate, log, print progress.

    Order matters for resuming. An epoch without evaluation writes its metrics line and
    then its checkpoint; a resumed run drops lines past its checkpoint, so every epoch
    appears exactly once. An epoch with evaluation is checkpointed first, its training
    record kept in pending_epoch.json, and evaluated after: a stop signal then never
    waits for an evaluation (it is abandoned between chunks, ``should_stop``), and a
    resumed run evaluates the pending epoch before it trains on (``evaluate_pending``),
    so every epoch still has exactly one line, with its evaluation.
    """

    def __init__(self, config: Config, run_dir: RunDir, sampler: ReplicatedMap,
                 state: TrainingState, steps_per_epoch: int, images_per_step: int,
                 chief: bool, evaluators: List[Evaluator] = (),
                 guard: Optional[NonFiniteGuard] = None,
                 should_stop: Optional[Callable[[], bool]] = None):
        super().__init__()
        self.guard = guard
        self.config = config
        self.run_dir = run_dir
        self.sampler = sampler
        self.state = state
        self.steps_per_epoch = steps_per_epoch
        self.images_per_step = images_per_step
        self.chief = chief
        self.evaluators = list(evaluators)
        self.should_stop = should_stop
        self.fixed_z = data.fixed_noise(SAMPLE_GRID, config.latent_dim, config.seed)
        self.writer = None
        self.last_record: Optional[dict] = None
        self.abandoned: Optional[int] = None  # the epoch whose evaluation a stop cut short
        self.fit_ended: Optional[float] = None  # when the last fit's training ended
        self._epoch_seconds: List[float] = []

    def _open_writer(self):
        if self.chief and self.writer is None:
            self.writer = tf.summary.create_file_writer(self.run_dir.path)
            if self.state.step == 0:  # a resumed run's first event file has them already
                settings = {k: v for k, v in dataclasses.asdict(self.config).items()
                            if k not in NON_RESULT_SETTINGS}
                summaries.write_hparams(self.writer, settings,
                                        os.path.basename(os.path.normpath(self.run_dir.path)))

    def on_train_begin(self, logs=None):
        self._open_writer()
        self._first_step = True  # of this fit: it traces the training step

    def on_train_end(self, logs=None):
        self.fit_ended = time.time()  # what fit does after this is its tear-down

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._wall_start = time.time()
        self._start_step = self.state.step

    def on_train_batch_end(self, batch, logs=None):
        if self._first_step:
            self._first_step = False
            timeline.record(f"first step (epoch {self.state.step // self.steps_per_epoch + 1})",
                            timeline.TRACING, self._wall_start, time.time())

    def on_epoch_end(self, epoch, logs=None):
        if self.guard is not None and self.guard.failure:
            return  # a diverged state is never recorded or checkpointed
        step = self.state.step
        if step % self.steps_per_epoch:
            return  # stopped within the epoch (a signal): nothing to record
        number = epoch + 1  # epochs are counted from 1 in every output
        train_seconds = time.perf_counter() - self._start
        trained = time.time()
        timeline.record(f"epoch {number}", timeline.EPOCH, self._wall_start, trained)
        record = {"epoch": number, "step": step}
        record.update({k: float(v) for k, v in (logs or {}).items()})
        record["seconds"] = train_seconds  # this process's share, for a resumed epoch
        record["images_per_sec"] = ((step - self._start_step) * self.images_per_step
                                    / train_seconds)
        every = self.config.eval_every
        due = bool(self.evaluators) and (
            (every and number % every == 0) or number == self.config.epochs)
        grid = image_grid(data.to_uint8(self.sampler(self.fixed_z)))
        if self.chief:
            self.run_dir.write_samples(number, grid)
        if not due:
            self._publish(record, grid)
            self.state.save()
            timeline.record(f"epoch {number} end", timeline.EPOCH_END, trained, time.time())
            self._report(record, time.perf_counter() - self._start)
            return
        if self.chief:
            self.run_dir.write_pending(record)
        self.state.save()  # the epoch is safe before its evaluation starts
        timeline.record(f"epoch {number} end", timeline.EPOCH_END, trained, time.time())
        self._evaluate(record, grid, self._start)

    def evaluate_pending(self, record: dict) -> bool:
        """Evaluates the checkpointed epoch ``record`` (pending_epoch.json) with the
        generator as restored; False if a stop abandoned it again."""
        self._open_writer()
        print(f"evaluating epoch {record['epoch']}, checkpointed before its evaluation "
              "was stopped", file=sys.stderr, flush=True)
        grid = image_grid(data.to_uint8(self.sampler(self.fixed_z)))
        return self._evaluate(dict(record), grid, time.perf_counter() - record["seconds"])

    def _evaluate(self, record: dict, grid: np.ndarray, start: float) -> bool:
        try:
            with timeline.span(f"evaluation {record['epoch']}", timeline.EVALUATION):
                for evaluate in self.evaluators:
                    record.update(evaluate(self.should_stop))
        except EvaluationAbandoned:
            self.abandoned = record["epoch"]
            if self.model is not None:
                self.model.stop_training = True
            print(f"evaluation of epoch {record['epoch']} abandoned for the stop; the "
                  "epoch is checkpointed and is evaluated first when the run resumes",
                  file=sys.stderr, flush=True)
            return False
        self._publish(record, grid)
        if self.chief:
            self.run_dir.clear_pending()
        self._report(record, time.perf_counter() - start)
        return True

    def _publish(self, record: dict, grid: np.ndarray) -> None:
        """The epoch's metrics line and TensorBoard points (the chief writes them)."""
        if not self.chief:
            return
        self.run_dir.append_metrics(record)
        with self.writer.as_default(step=record["epoch"]):
            for key, value in record.items():
                if key not in ("epoch", "step"):
                    tf.summary.scalar(summaries.tag(key), value)
            tf.summary.image("samples", grid[None])
        self.writer.flush()

    def _report(self, record: dict, seconds: float) -> None:
        self._epoch_seconds.append(seconds)
        self.last_record = record
        print(progress_line(record, self.config.epochs, self._epoch_seconds), flush=True)

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def progress_line(record: dict, epochs: int, epoch_seconds: List[float]) -> str:
    """One human-readable line per epoch: losses, diagnostics, speed and time left."""
    left = (epochs - record["epoch"]) * float(np.mean(epoch_seconds[-5:]))
    parts = [f"epoch {record['epoch']}/{epochs}",
             f"d_loss {record['d_loss']:.4f}", f"g_loss {record['g_loss']:.4f}",
             f"D(x) {record['d_real_prob']:.3f}", f"D(G(z)) {record['d_fake_prob']:.3f}",
             f"|grad G| {record['g_grad_norm']:.3g}",
             f"{record['images_per_sec']:.0f} img/s"]
    for key, label in (("inception_score", "IS"), ("fid", "FID"),
                       ("digits_score", "digits score"), ("digits_fid", "digits FID")):
        if key in record:
            parts.append(f"{label} {record[key]:.3f}")
    parts.append(f"{record['seconds']:.1f}s, {_duration(left)} left")
    return "  ".join(parts)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def run(config: Config) -> Optional[dict]:
    """Trains (or resumes) one run; returns the last epoch's metrics record.

    The process holds the run folder's lease (``lease``) from before it reads the folder
    until it returns: a second process on the same folder waits for a stopping holder,
    or raises ``lease.Held``. Under a multi-worker strategy the chief takes it.

    Args:
      config: the settings; defaults are resolved and everything is validated first.

    Raises:
      UsageError: a user's mistake, found before any training step and before the run
        directory is written (a folder created for the lease alone is removed again).
      lease.Held: another process is training this run folder.
      TrainingDiverged: a non-finite loss or gradient norm; the last good checkpoint
        is kept.
      Interrupted: SIGTERM or SIGINT; a checkpoint of the last finished step is saved
        (an evaluation under way is abandoned, and runs first on resuming).
    """
    config = config.resolved()
    run_dir = RunDir(config.run_dir)
    _fresh_process_state(config)
    check_writable(config.run_dir)
    strategy = distribute.make_strategy(config.strategy, config.tpu)
    stopping.reassert()  # after the strategy: see there
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:  # before any data or model is loaded
        lower = config.batch_size // replicas * replicas
        choices = [f"--batch_size={b}" for b in (lower, lower + replicas) if b > 0]
        raise UsageError(
            f"--batch_size={config.batch_size} does not split across the {replicas} "
            f"replicas of --strategy={distribute.resolve_name(config.strategy, config.tpu)}; "
            f"choose {' or '.join(choices)} (a multiple of {replicas}), or one device per "
            "run: --strategy=default (with --parallel for a grid, one run per GPU)")
    chief = distribute.is_chief(strategy)
    cluster = distribute.is_cluster(config.strategy, config.tpu)
    agree = distribute.agreement(strategy) if cluster else None
    lease = None
    # In a cluster, a worker that stopped alone during start-up would leave the others at
    # a collective it never joins: from before the lease on, a stop signal is only
    # recorded, and the workers ask each other as they take the lease, between start-up
    # stages (_stop_together), then after every training call (ClusterStop).
    in_cluster = contextlib.ExitStack()
    if cluster:
        in_cluster.enter_context(stopping.deferred())
    try:
        # A stop signal while the lease is taken acts once ``lease`` is assigned (and so
        # released below): acted on at once, it could come between the lease's record
        # being written and this assignment, and leave the folder behind. Waiting for
        # another holder still stops at once (``Lease.acquire`` polls for a signal).
        with stopping.deferred():
            lease = _take_lease(config.run_dir, chief, agree, dataclasses.asdict(config))
            signum = stopping.received()
        if signum is not None and agree is None:
            raise stopping.Interrupted(signum)
        # Read under the lease: until then another process may be overwriting the run,
        # or retrying it after a divergence. (In a cluster every worker reads them here,
        # before the collectives that precede the chief's first write.)
        invocation = scheduler.invocation()
        overwrite = run_dir.will_overwrite(config, invocation)
        earlier = run_dir.divergence()
        if earlier and not (config.retry_diverged or overwrite):
            raise TrainingDiverged(
                f"{config.run_dir} diverged before, in epoch {earlier['epoch']}, step "
                f"{earlier['step']} ("
                f"{', '.join(f'{k} = {v}' for k, v in earlier['values'].items())}); it is "
                "not trained again: --retry_diverged resumes it from its last good "
                "checkpoint, --overwrite starts it afresh")
        with (stopping.on_request(lease.mark_stopping) if lease
              else contextlib.nullcontext()):
            record = _train(config, run_dir, strategy, chief, cluster, agree, overwrite,
                            invocation)
        if chief:
            run_dir.clear_failure()  # this attempt succeeded: an older failure is history
        return record
    finally:
        # (in_cluster is left last, even if the release fails)
        with in_cluster, stopping.deferred(), timeline.span("lease released",
                                                            timeline.RUN_END):
            if lease is not None:  # (a signal now must not cut the release short)
                lease.release(remove_unused=True)


_runs_in_this_process = [0]


def _fresh_process_state(config: Config) -> None:
    """What a run in a process of its own starts with, for a process that trains
    several runs (a slot of a --parallel grid, a sequential grid): Keras's fresh state,
    and op determinism only when this run asks for it."""
    if _runs_in_this_process[0]:
        tf.keras.backend.clear_session()
        if not config.deterministic:
            # TensorFlow exports no switch back; its own internal one, where it has it.
            from tensorflow.python.framework import config as tf_config
            getattr(tf_config, "disable_op_determinism", lambda: None)()
    _runs_in_this_process[0] += 1
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()


def _take_lease(path: str, chief: bool, agree, settings: Optional[dict] = None
                ) -> Optional[lease_lib.Lease]:
    """The chief's lease of the run folder. In a cluster every worker hears what came
    of it: the chief could not take it, or a stop signal reached any worker meanwhile
    (then every worker raises Interrupted here), so that none waits at a collective
    another never joins. Called with stop signals deferred (see ``run``)."""
    lease, problem, interrupted = None, None, None
    if chief:
        try:
            lease = lease_lib.Lease(path, run=settings).acquire()
        except lease_lib.Held as error:
            problem = error
        except OSError as error:
            problem = UsageError(f"cannot write {path}: {error}")
        except stopping.Interrupted as error:  # while waiting for another holder
            interrupted = error
    if agree is not None:
        # 2: a worker was stopped; 1: the chief could not take the lease; 0: go on.
        signalled = interrupted is not None or stopping.received() is not None
        outcome = agree(2 if signalled else 1 if problem else 0)
        if outcome == 2 and interrupted is None:
            interrupted = (stopping.Interrupted(stopping.received()) if signalled else
                           _stopped_elsewhere())
        elif outcome == 1 and problem is None:
            problem = UsageError(f"the chief worker could not take the lease of {path}; "
                                 "see its output")
    if interrupted is not None or problem is not None:
        if lease is not None:
            lease.release(remove_unused=True)
        raise interrupted or problem
    return lease


def _stop_together(agree) -> None:
    """In a cluster, between start-up stages: raises Interrupted on every worker if a
    stop signal (recorded, see ``run``) reached any of them. ``agree``: None outside a
    cluster, where a signal stops the process at once and this does nothing."""
    if agree is None:
        return
    signum = stopping.received()
    if agree(2 if signum is not None else 0) == 2:
        raise stopping.Interrupted(signum) if signum is not None else _stopped_elsewhere()


def _stopped_elsewhere() -> stopping.Interrupted:
    """What a worker that received no signal raises when another worker was stopped."""
    return stopping.Interrupted(
        signal.SIGTERM, "stopped before training started: another worker of the cluster "
        "was stopped; nothing of this run was written. Run the same command to start it.")


def _train(config: Config, run_dir: RunDir, strategy, chief: bool, cluster: bool, agree,
           overwrite: bool, invocation: str) -> Optional[dict]:
    """``run`` once the lease is held: load, build, prepare the folder, resume, fit."""
    replicas = strategy.num_replicas_in_sync
    with timeline.span("data", timeline.DATA):
        images = data.load_images(config.dataset, config.image_size, config.data_dir)
        batches = data.TrainingBatches(images, config.batch_size, config.d_steps,
                                       config.latent_dim, config.seed)
    _stop_together(agree)
    with timeline.span("classifier and real features", timeline.SCORER):
        scorer = make_scorer(config, images, strategy, agree, chief)
    _stop_together(agree)
    model_start = time.time()
    tf.keras.utils.set_random_seed(config.seed)  # initial weights
    with strategy.scope():
        gan = build_gan(config, images.shape[1:])

    # From here on the run folder is written: a stop signal is recorded and acted on
    # where the run can save and stop, never in the middle of a write.
    with StopSignals() as signals:
        existing = not overwrite and run_dir.saved_config() is not None
        problem = ""
        if chief:
            try:
                run_dir.prepare(config, overwrite=overwrite, keep=lease_lib.FILES,
                                invocation=invocation)
                run_dir.clear_divergence()  # a retry: diverged.json is written again if need be
            except UsageError as error:
                problem = str(error)
            except OSError as error:  # a full or read-only disk: every worker must hear of it
                problem = f"cannot write {config.run_dir}: {error}"
        # In a cluster no worker reads the run directory before the chief has prepared it
        # (with --overwrite: emptied it), and if the chief cannot, every worker stops.
        if cluster and agree(1 if problem else 0) and not problem:
            problem = f"the chief worker could not prepare {config.run_dir}; see its output"
        if problem:
            raise UsageError(problem)
        # Non-chief workers must save too (saving is collective) but somewhere of their own.
        checkpoint_dir = (run_dir.checkpoint_dir if chief
                          else tempfile.mkdtemp(prefix="tfgan_exp-worker-"))
        if not chief:
            print(f"non-chief worker: checkpoints in {checkpoint_dir}", file=sys.stderr)
        # Every worker resumes from the chief's checkpoints: give all the same --run_dir,
        # on storage they share.
        state = TrainingState(gan, checkpoint_dir, config.keep_checkpoints,
                              restore_directory=run_dir.checkpoint_dir)
        spe = batches.steps_per_epoch
        try:
            start_step, restore_problem = state.restore(), ""
        except UsageError as error:
            if not cluster:
                raise
            start_step, restore_problem = -1, str(error)  # the others must hear of it
        if cluster:
            # Workers that resumed from different checkpoints would train different
            # models in lockstep: the newest could not be read by all (storage not
            # shared, or not yet consistent). Steps are exact up to 2**24 through the
            # float32 collective.
            oldest, newest = distribute.spread(agree, start_step)
            if restore_problem:
                raise UsageError(restore_problem)
            if oldest < 0:
                raise UsageError("another worker could not restore a checkpoint; see its "
                                 "output")
            if newest != oldest:
                raise UsageError(f"the workers resumed from different steps ({oldest} to "
                                 f"{newest}): give every worker the same --run_dir on "
                                 "storage they all read")
        start_epoch, offset = divmod(start_step, spe)
        pending = None
        if chief:  # what was logged after the checkpoint is logged again from here
            run_dir.keep_metrics_through(start_epoch)
            summaries.drop_events_after(run_dir.path, start_epoch)
            pending = _pending_evaluation(run_dir, start_epoch, offset)
        if cluster and agree(1 if pending else 0) and not chief:
            # The chief evaluates it and writes its line; every worker takes part.
            pending = {"epoch": start_epoch, "step": start_step, "seconds": 0.0}
        if existing and not start_step:
            print(f"note: {config.run_dir} holds no complete checkpoint yet; training "
                  "starts from the beginning", file=sys.stderr)
        if start_step:
            print(f"resuming {config.run_dir} at step {start_step} (epoch "
                  f"{start_epoch + 1}, step {offset} of {spe})", file=sys.stderr)
        timeline.record("model, folder and restore", timeline.MODEL, model_start, time.time())

        stop = ClusterStop(agree, signals) if cluster else None
        should_stop = stop.poll if stop else (lambda: signals.received is not None)
        guard = NonFiniteGuard(state)
        evaluators = [] if scorer is None else [EpochEvaluator(
            scorer, strategy, gan.generator, config.eval_samples, config.latent_dim,
            config.seed)]
        sampler = ReplicatedMap(strategy, lambda z: gan.generator(z, training=False))
        recorder = EpochRecorder(config, run_dir, sampler, state, spe,
                                 batches.images_per_step, chief, evaluators, guard,
                                 should_stop)
        with contextlib.closing(recorder):
            if pending is not None and not recorder.evaluate_pending(pending):
                raise _stopped_in_evaluation(stop.agreed if stop else signals.received,
                                             recorder.abandoned, state)
            if start_epoch >= config.epochs:
                print(f"{config.run_dir}: already trained for {start_epoch} epochs",
                      file=sys.stderr)
                records = run_dir.read_metrics()
                return records[-1] if records else None
            if stop is not None:
                stop.poll()  # every worker asks: a signal during start-up's last stages
            stopped_by = stop.agreed if stop else signals.received
            if stopped_by is not None:  # came while the folder was prepared: nothing trained
                raise Interrupted(stopped_by, f"stopped by {signal.Signals(stopped_by).name} "
                                  "before training resumed; nothing was lost. Run the same "
                                  "command to resume.")
            if chief and scorer is not None:
                run_dir.write_reference(scorer.describe(config.eval_samples))
            attempt = (provenance.Attempt(run_dir, distribute.resolve_name(config.strategy,
                                                                           config.tpu),
                                          replicas, start_step, config.deterministic)
                       if chief else provenance.NOT_RECORDED)
            print(f"training {config.g_loss}/{config.d_loss} on {config.dataset} "
                  f"({len(images)} images, {images.shape[1]}px) for {config.epochs} epochs "
                  f"of {spe} steps, batch {config.batch_size} on {replicas} replica(s) -> "
                  f"{config.run_dir}", file=sys.stderr, flush=True)
            # A run resumed within an epoch first finishes that epoch (a fit of its
            # remaining steps, with the epoch's running means put back), then fits whole
            # epochs.
            phases = []
            if offset:
                phases.append((start_epoch, start_epoch + 1, spe - offset))
                start_epoch += 1
            if start_epoch < config.epochs:
                phases.append((start_epoch, config.epochs, spe))
            resumed_means = state.tracker_values() if offset else None
            checkpointer = StepCheckpointer(state, spe, config.checkpoint_every_steps,
                                            signals, guard, resumed_means, stop)
            for first_epoch, end_epoch, steps in phases:
                first_step = state.step
                recorder.fit_ended = None
                gan.fit(batches.dataset(first_step,
                                        first_step + (end_epoch - first_epoch) * steps),
                        epochs=end_epoch, initial_epoch=first_epoch, steps_per_epoch=steps,
                        callbacks=[guard, checkpointer, recorder], verbose=0)
                if recorder.fit_ended is not None:
                    timeline.record("fit's tear-down", timeline.RUN_END, recorder.fit_ended,
                                    time.time())
                if (guard.failure or recorder.abandoned
                        or (stop.agreed if stop else signals.received) is not None):
                    break
            if (stop is not None and not guard.failure and stop.agreed is None
                    and recorder.abandoned is None):
                # A signal that came after the last step's poll (say, during the last
                # evaluation): every worker asks once more, together, so all stop alike.
                stop.poll()
    if guard.failure:
        kept = state.manager.latest_checkpoint or "none yet"
        if chief:  # where, too: a NaN from a faulty device is not the loss's doing
            run_dir.record_divergence(dict(guard.where, checkpoint=kept, **attempt.machine))
        attempt.end("diverged", state.step)
        raise TrainingDiverged(f"{guard.failure}. The last good checkpoint is kept "
                               f"({kept}) and {run_dir.diverged_path} says where; lower "
                               "the learning rates or change the loss.")
    stopped_by = stop.agreed if stop else signals.received
    if recorder.abandoned is not None:
        attempt.end("stopped", state.step)
        raise _stopped_in_evaluation(stopped_by, recorder.abandoned, state)
    if stopped_by is not None and state.step < config.epochs * spe:
        # (A signal at the last step ends a complete run: nothing is left to resume.)
        attempt.end("stopped", state.step)
        raise stopped_after(stopped_by, state.step, state.manager.latest_checkpoint)
    attempt.end("finished", state.step)
    return recorder.last_record


def _pending_evaluation(run_dir: RunDir, start_epoch: int, offset: int) -> Optional[dict]:
    """The checkpointed epoch still to evaluate: pending_epoch.json when it is the epoch
    the run resumes at and has no metrics line; else None (and a stale record is
    dropped: the run resumed from an older checkpoint and trains that epoch again)."""
    pending = run_dir.pending()
    if pending is None:
        return None
    records = run_dir.read_metrics()
    if (offset or pending.get("epoch") != start_epoch
            or (records and records[-1]["epoch"] >= start_epoch)):
        run_dir.clear_pending()
        return None
    return pending


def _stopped_in_evaluation(signum: int, epoch: int, state: TrainingState) -> Interrupted:
    return Interrupted(signum, f"stopped by {signal.Signals(signum).name} during the "
                       f"evaluation of epoch {epoch}, which is saved "
                       f"({state.manager.latest_checkpoint}); the same command resumes, "
                       "evaluating it first.")
