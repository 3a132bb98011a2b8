"""Time the training step and the evaluation: ``python -m tfgan_exp.bench``.

Times, side by side, one training step (``--d_steps`` = 1) of
  * ``ours``: the GAN that run.py builds, through Keras's own train function (the code
    fit runs: strategy, replica all-reduce, loss reduction, metric trackers);
  * ``ours_fit`` (``--fit``): the same train function called by Keras's ``fit`` with the
    per-step callbacks run.py gives it (NaN guard, step checkpointer; no saves), so the
    host reads they make each step are in the time too;
  * ``plain_tf``: the same networks and loss in a bare ``tf.function`` loop;
  * ``torch``: the same networks in PyTorch, when torch is installed
    (``pip install -r requirements-bench.txt``);
all on the same random data, after a warm-up, alternating in rounds that rotate who goes
first. With ``--profile_dir`` it also traces 'ours' and 'plain_tf' with TensorFlow's
profiler and prints their kernel time by op type (see ``profiling``). It times the
training input pipeline alone, and the Inception forward with the resize to 299x299
(``--inception_model`` directory, or an untrained Inception-v3 stand-in of the same
size). The last line printed is one JSON object.
"""
import json
import math
import os
import resource
import statistics
import tempfile
import time

import numpy as np
from absl import flags

import tfgan_exp  # noqa: F401  (selects tf_keras before TensorFlow is imported)
from tfgan_exp.command_line import fail, run_command
from tfgan_exp.config import DATASET_DEFAULTS, Config, UsageError

F = flags.FLAGS
flags.DEFINE_integer("image_size", 32, "Image side in pixels, a multiple of 8.")
flags.DEFINE_integer("batch_size", 64, "Global batch per step.")
flags.DEFINE_integer("width", 64, "Network width w (64 = SN-GAN's standard CNN).")
flags.DEFINE_integer("steps", 20, "Timed steps per implementation per round.")
flags.DEFINE_integer("warmup", 5, "Untimed steps first (tracing, autotuning).")
flags.DEFINE_integer("rounds", 3, "Alternating rounds; the median round is reported.")
flags.DEFINE_string("g_loss", "nonsat", "Generator loss of 'ours' (the others use nonsat).")
flags.DEFINE_string("mixed_precision", "", "bf16, fp16 or empty (float32), for 'ours'.")
flags.DEFINE_boolean("jit_compile", False, "XLA for 'ours' and 'plain_tf'.")
flags.DEFINE_integer("steps_per_execution", 1, "Steps per call of 'ours'.")
flags.DEFINE_integer("eval_images", 200, "Images through Inception for the eval rate; 0 = skip.")
flags.DEFINE_string("inception_model", "", "Local Inception SavedModel; empty = stand-in.")
flags.DEFINE_boolean("compare", True, "Also time plain_tf and torch.")
flags.DEFINE_boolean("fit", True, "Also time 'ours' through fit with run.py's per-step "
                     "callbacks ('ours_fit').")
flags.DEFINE_string("profile_dir", "", "If set, trace --profile_steps steps of 'ours' and "
                    "'plain_tf' here (TensorBoard's Profile tab) and print kernel time by op type.")
flags.DEFINE_integer("profile_steps", 10, "Steps traced per implementation with --profile_dir.")
flags.DEFINE_boolean("flops", True, "Count the FLOPs of a training image and of an "
                     "evaluated image on their graphs.")
flags.DEFINE_integer("input_steps", 300, "Steps read from the training input pipeline for "
                     "its rate; 0 = skip.")
flags.DEFINE_integer("estimate_images", 50_000, "Training images per epoch for the cost "
                     "estimate (CIFAR-10 50,000; STL-10 100,000).")
flags.DEFINE_integer("estimate_epochs", 300, "Epochs per run for the cost estimate.")
flags.DEFINE_integer("estimate_eval_samples", 10_000, "Images per evaluation for the cost "
                     "estimate.")
flags.DEFINE_integer("estimate_eval_every", DATASET_DEFAULTS["cifar10"]["eval_every"],
                     "Epochs between evaluations for the cost estimate (run.py's CIFAR-10 "
                     f"default; STL-10's is {DATASET_DEFAULTS['stl10']['eval_every']}).")


def _every_to_stay_under(share: float, budget: float = 0.1) -> int:
    """The smallest --eval_every that keeps ``share`` (one evaluation / one epoch) under
    ``budget``; rounded first so that float noise cannot push an exact ratio up."""
    return max(1, math.ceil(round(share / budget, 6)))


def _evaluations(epochs: int, every: int) -> int:
    """Evaluations in a run: every ``every``-th epoch and the last (0 = none)."""
    return (epochs // every + (1 if epochs % every else 0)) if every else 0


def run_hours(step_seconds: float, batch_size: int, eval_images_per_sec: float) -> dict:
    """Estimated hours of one run: training steps plus its evaluations.

    Also what one evaluation costs beside one epoch's training (``eval_share``), and the
    smallest ``--eval_every`` that keeps evaluation under 10% of the training time.
    """
    epochs, every = F.estimate_epochs, F.estimate_eval_every
    evaluations = _evaluations(epochs, every)
    epoch_seconds = F.estimate_images // batch_size * step_seconds
    eval_seconds = (F.estimate_eval_samples / eval_images_per_sec
                    if eval_images_per_sec else 0.0)
    train = epochs * epoch_seconds / 3600
    evaluate = evaluations * eval_seconds / 3600
    share = eval_seconds / epoch_seconds
    return {"train_hours": train, "eval_hours": evaluate, "total_hours": train + evaluate,
            "images_per_epoch": F.estimate_images, "epochs": epochs,
            "eval_samples": F.estimate_eval_samples, "eval_every": every,
            "evaluations": evaluations, "eval_share": share,
            "eval_every_for_10_percent": _every_to_stay_under(share)}


def flop_counts(gan, config, image_shape, inception) -> dict:
    """GFLOP per training image (run.py's train step) and per evaluated image.

    Counted on the graphs, so the same on any machine. The evaluation is Inception-v3
    with the resize to 299x299, counted on the stand-in (a loaded module's ops sit in
    nested functions, which the count does not see); ``eval_flop_share`` is then one
    evaluation's FLOPs over one epoch's training FLOPs for the estimate's settings.

    Args:
      gan: the GAN that run.py builds for ``config`` (its train step is traced anew).
      inception: an InceptionClassifier holding the stand-in network.
    """
    import tensorflow as tf
    from tfgan_exp.bench import profiling
    spec = {k: tf.TensorSpec(v.shape, tf.as_dtype(v.dtype))
            for k, v in _random_batch(config, image_shape).items()}
    train = profiling.graph_flops(tf.function(gan.train_step).get_concrete_function(spec))
    evaluate = profiling.graph_flops(inception.traced_forward(image_shape))
    per_train_image = train / (config.batch_size * config.d_steps)
    share = (F.estimate_eval_samples * evaluate) / (F.estimate_images * per_train_image)
    evaluations = _evaluations(F.estimate_epochs, F.estimate_eval_every)
    run = (F.estimate_epochs * F.estimate_images * per_train_image
           + evaluations * F.estimate_eval_samples * evaluate)
    return {"train_gflop_per_image": per_train_image / 1e9,
            "eval_gflop_per_image": evaluate / 1e9, "eval_flop_share": share,
            "eval_every_for_10_percent": _every_to_stay_under(share),
            "run_pflop": run / 1e15}


def _random_batch(config, image_shape, seed=0):
    rng = np.random.default_rng(seed)
    b, latent = config.batch_size, config.latent_dim
    return {"images": rng.integers(0, 256, (b, 1) + image_shape, dtype=np.uint8),
            "z_d": rng.standard_normal((b, 1, latent), dtype=np.float32),
            "z_g": rng.standard_normal((b, latent), dtype=np.float32),
            "gp_eps": rng.random((b, 1), dtype=np.float32)}


def _random_dataset(config, image_shape):
    """``_random_batch`` over and over, prefetched: the input of 'ours' and 'ours_fit'."""
    import tensorflow as tf
    return tf.data.Dataset.from_tensors(_random_batch(config, image_shape)).repeat().prefetch(2)


def ours(gan, config, image_shape):
    """A callable running ``steps_per_execution`` steps of ``gan``'s real train function."""
    import tensorflow as tf
    strategy = tf.distribute.get_strategy()
    iterator = iter(strategy.experimental_distribute_dataset(
        _random_dataset(config, image_shape)))
    train_function = gan.make_train_function()
    steps = config.steps_per_execution

    def run():
        logs = train_function(iterator)
        float(logs["d_loss"])  # wait for the device
    return run, steps


def ours_fit(gan, config, image_shape, steps: int, directory: str):
    """A callable running one ``fit`` of ``steps`` steps (rounded up to whole calls of
    ``steps_per_execution``) with run.py's per-step callbacks; it returns the seconds
    from the start of training to its end.

    That span holds every step with its callbacks and the epoch's start and end. It
    leaves out fit's own set-up and tear-down, which a run pays once, not per step: on
    the project's CPU machine fit sometimes returns up to a second after training has
    ended (inside TensorFlow's clean-up), which would swamp a short timed fit.
    ``directory`` holds the (never written) checkpoints.
    """
    import tensorflow as tf
    from tfgan_exp.training.checkpointing import StepCheckpointer, StopSignals, TrainingState
    from tfgan_exp.training.trainer import NonFiniteGuard
    steps = math.ceil(steps / config.steps_per_execution) * config.steps_per_execution
    dataset = _random_dataset(config, image_shape)
    state = TrainingState(gan, directory, keep=1)
    guard = NonFiniteGuard(state)
    # every_steps=0 and signals never handled (StopSignals not entered): it runs its
    # per-step checks and never saves.
    checkpointer = StepCheckpointer(state, steps, 0, StopSignals(), guard)
    span = {}

    class Span(tf.keras.callbacks.Callback):
        """Marks training's start and end; the guard and checkpointer act only between."""

        def on_train_begin(self, logs=None):
            span["start"] = time.perf_counter()

        def on_train_end(self, logs=None):
            span["end"] = time.perf_counter()

    def run():
        gan.fit(dataset, epochs=1, steps_per_epoch=steps,
                callbacks=[Span(), guard, checkpointer], verbose=0)
        if guard.failure:
            raise RuntimeError(guard.failure)
        return span["end"] - span["start"]
    return run, steps


def plain_tf(config, image_shape):
    """The same networks and non-saturating loss in a bare tf.function loop."""
    import tensorflow as tf
    from tfgan_exp.gan import networks
    g = networks.build_generator(image_shape, config.latent_dim, config.width)
    d = networks.build_discriminator(image_shape, config.width)
    g_opt = tf.keras.optimizers.Adam(config.lr_g, config.beta1, config.beta2)
    d_opt = tf.keras.optimizers.Adam(config.lr_d, config.beta1, config.beta2)
    batch = {k: tf.constant(v) for k, v in _random_batch(config, image_shape).items()}

    @tf.function(jit_compile=config.jit_compile)
    def step(images, z_d, z_g):
        real = tf.cast(images, tf.float32) / 127.5 - 1.0
        with tf.GradientTape() as tape:
            fake = g(z_d, training=True)
            d_loss = tf.reduce_mean(tf.nn.softplus(-d(real, training=True))
                                    + tf.nn.softplus(d(fake, training=True)))
        d_opt.apply_gradients(zip(tape.gradient(d_loss, d.trainable_variables),
                                  d.trainable_variables))
        with tf.GradientTape() as tape:
            g_loss = tf.reduce_mean(tf.nn.softplus(-d(g(z_g, training=True), training=True)))
        g_opt.apply_gradients(zip(tape.gradient(g_loss, g.trainable_variables),
                                  g.trainable_variables))
        return d_loss

    def run():
        float(step(batch["images"][:, 0], batch["z_d"][:, 0], batch["z_g"]))
    return run, 1


def torch_step(config, image_shape):
    """The same networks in PyTorch (NHWC data transposed once), or None without torch.

    On the GPU when PyTorch sees one, with cuDNN choosing its fastest kernels for these
    fixed shapes (``cudnn.benchmark``, as PyTorch's own DCGAN example sets).
    """
    try:
        import torch
    except ImportError:
        return None
    from torch import nn
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    size, _, channels = image_shape
    w, m = config.width, size // 8
    g = nn.Sequential(
        nn.Linear(config.latent_dim, m * m * 8 * w, bias=False), nn.BatchNorm1d(m * m * 8 * w),
        nn.ReLU(), nn.Unflatten(1, (8 * w, m, m)),
        *[layer for c_in, c_out in ((8 * w, 4 * w), (4 * w, 2 * w), (2 * w, w)) for layer in (
            nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU())],
        nn.Conv2d(w, channels, 3, 1, 1), nn.Tanh())
    plan = [(channels, w, 3, 1), (w, w, 4, 2), (w, 2 * w, 3, 1), (2 * w, 2 * w, 4, 2),
            (2 * w, 4 * w, 3, 1), (4 * w, 4 * w, 4, 2), (4 * w, 8 * w, 3, 1)]
    d = nn.Sequential(*[layer for c_in, c_out, k, s in plan for layer in (
        nn.Conv2d(c_in, c_out, k, s, (k - 1) // 2 if s == 1 else 1), nn.LeakyReLU(0.1))],
        nn.Flatten(), nn.Linear(m * m * 8 * w, 1))
    g, d = g.to(device), d.to(device)
    g_opt = torch.optim.Adam(g.parameters(), config.lr_g, (config.beta1, config.beta2))
    d_opt = torch.optim.Adam(d.parameters(), config.lr_d, (config.beta1, config.beta2))
    batch = _random_batch(config, image_shape)
    images = torch.from_numpy(batch["images"][:, 0]).permute(0, 3, 1, 2).contiguous().to(device)
    z_d = torch.from_numpy(batch["z_d"][:, 0]).to(device)
    z_g = torch.from_numpy(batch["z_g"]).to(device)
    softplus = nn.functional.softplus

    def run():
        real = images.float() / 127.5 - 1.0
        d_opt.zero_grad()
        d_loss = (softplus(-d(real)) + softplus(d(g(z_d).detach()))).mean()
        d_loss.backward()
        d_opt.step()
        g_opt.zero_grad()
        g_loss = softplus(-d(g(z_g))).mean()
        g_loss.backward()
        g_opt.step()
        d_loss.item()  # wait for the step, as the others do
    return run, 1


def _time(run, steps_per_call, calls):
    """Seconds per step over ``calls`` calls of ``run``: their wall time, or the sum of
    the seconds ``run`` returns where it times itself (see ``ours_fit``)."""
    total = 0.0
    for _ in range(calls):
        start = time.perf_counter()
        seconds = run()
        total += time.perf_counter() - start if seconds is None else seconds
    return total / (calls * steps_per_call)


def eval_rate(num_images: int, image_size: int, classifier) -> float:
    """Images per second through ``classifier`` (Inception with the resize), after one
    warm-up chunk."""
    images = np.random.default_rng(0).uniform(-1, 1, (num_images, image_size, image_size, 3))
    classifier(images[:classifier.chunk_size])
    start = time.perf_counter()
    classifier(images)
    return num_images / (time.perf_counter() - start)


def input_rate(config, image_shape, steps: int, num_images: int = 50_000) -> float:
    """Images per second that the training input pipeline (``data.TrainingBatches``) yields.

    Reads ``steps`` steps from the same pipeline ``run.py`` trains on, over ``num_images``
    random uint8 images held in memory as the loaders hold them, with nothing consuming
    them: the rate the pipeline can feed a step at most.
    """
    from tfgan_exp.data import TrainingBatches
    images = np.random.default_rng(0).integers(0, 256, (num_images,) + image_shape, np.uint8)
    batches = TrainingBatches(images, config.batch_size, config.d_steps, config.latent_dim, 0)
    iterator = iter(batches.dataset(0, steps + 10))
    for _ in range(10):  # warm-up: the first permutation, autotuning
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    seconds = time.perf_counter() - start
    # Deleted here, not at exit: an iterator whose numpy_function threads are still
    # prefetching can hang the interpreter's shutdown.
    del iterator
    return steps * batches.images_per_step / seconds


def profile(candidates, steps: int, logdir: str) -> str:
    """Traces ``steps`` steps of 'ours' and 'plain_tf'; returns the op-type table.

    With several steps per call, ``steps`` is rounded up to whole calls of 'ours', and
    the plain loop traces as many steps.
    """
    from tfgan_exp.bench import profiling
    steps = math.ceil(steps / candidates["ours"][1]) * candidates["ours"][1]
    times = {}
    # A throwaway trace first: the profiler's first session pays its own start-up, which
    # would otherwise slow the kernels of whichever implementation came first.
    run, _ = candidates["ours"]
    profiling.trace(run, 1, os.path.join(logdir, "warmup"))
    for name in ("ours", "plain_tf"):
        if name in candidates:
            run, per_call = candidates[name]
            path = profiling.trace(run, steps // per_call, os.path.join(logdir, name))
            times[name] = profiling.kernels_by_type(path)
    return profiling.format_table(times, steps)


def peak_memory_mb() -> float:
    """Peak accelerator memory if there is a GPU, else the process's peak resident memory."""
    import tensorflow as tf
    if tf.config.list_physical_devices("GPU"):
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv):
    from absl import logging
    logging.set_verbosity(logging.WARNING)
    try:
        config = Config(dataset="cifar10", image_size=F.image_size, width=F.width,
                        batch_size=F.batch_size, g_loss=F.g_loss,
                        mixed_precision=F.mixed_precision, jit_compile=F.jit_compile,
                        steps_per_execution=F.steps_per_execution).resolved()
        for name in ("steps", "rounds", "profile_steps"):
            if F[name].value < 1:
                raise UsageError(f"--{name}={F[name].value}: must be at least 1")
    except UsageError as error:
        fail(str(error))
    from tfgan_exp.evaluation.classifiers import InceptionClassifier, inception_standin
    from tfgan_exp.training.trainer import build_gan
    image_shape = (config.image_size, config.image_size, 3)
    gan = build_gan(config, image_shape)
    # One stand-in Inception (seconds to build) for the eval rate and the FLOP count.
    standin = (InceptionClassifier(module=inception_standin())
               if F.flops or (F.eval_images and not F.inception_model) else None)
    candidates = {"ours": ours(gan, config, image_shape)}
    checkpoints = tempfile.TemporaryDirectory(prefix="tfgan_exp-bench-")
    if F.fit:
        candidates["ours_fit"] = ours_fit(gan, config, image_shape, F.steps, checkpoints.name)
    if F.compare:
        candidates["plain_tf"] = plain_tf(config, image_shape)
        torch_candidate = torch_step(config, image_shape)
        if torch_candidate is not None:
            candidates["torch"] = torch_candidate
    for run, steps in candidates.values():  # warm-up: tracing, autotuning, allocation
        _time(run, steps, max(1, F.warmup // steps))
    # Traced right after the warm-up: after ~100 runs TensorFlow's executor has learnt
    # which kernels are cheap and stops emitting trace events for them.
    table = profile(candidates, F.profile_steps, F.profile_dir) if F.profile_dir else ""
    rounds = {name: [] for name in candidates}
    names = list(candidates)
    for r in range(F.rounds):
        # Alternate, and rotate who goes first: drifts in machine load and the cost of
        # coming first in a round then fall on every implementation alike.
        for name in names[r % len(names):] + names[:r % len(names)]:
            run, steps = candidates[name]
            rounds[name].append(_time(run, steps, max(1, F.steps // steps)))
    step_seconds = {name: statistics.median(times) for name, times in rounds.items()}
    result = {
        "train_step_ms": 1000 * step_seconds["ours"],
        "train_images_per_sec": config.batch_size / step_seconds["ours"],
        **{f"{name}_step_ms": 1000 * s for name, s in step_seconds.items() if name != "ours"},
        **{f"speed_vs_{name}": s / step_seconds["ours"]
           for name, s in step_seconds.items() if name not in ("ours", "ours_fit")},
        # Every round's time, so that the spread behind each median is visible.
        "round_step_ms": {name: [round(1000 * s, 1) for s in times]
                          for name, times in rounds.items()},
    }
    if "ours_fit" in step_seconds:
        result["fit_over_train_function"] = step_seconds["ours_fit"] / step_seconds["ours"]
        result.update({f"fit_speed_vs_{name}": s / step_seconds["ours_fit"]
                       for name, s in step_seconds.items() if not name.startswith("ours")})
    if F.eval_images:
        inception = InceptionClassifier(F.inception_model) if F.inception_model else standin
        result["eval_images_per_sec"] = eval_rate(F.eval_images, config.image_size, inception)
    if F.input_steps:
        result["input_images_per_sec"] = input_rate(config, image_shape, F.input_steps)
    if F.flops:
        result["flops"] = flop_counts(gan, config, image_shape, standin)
    result["estimated_run"] = run_hours(step_seconds["ours"], config.batch_size,
                                        result.get("eval_images_per_sec", 0.0))
    result["peak_memory_mb"] = peak_memory_mb()
    result["settings"] = {"image_size": config.image_size, "batch_size": config.batch_size,
                          "width": config.width, "mixed_precision": config.mixed_precision,
                          "jit_compile": config.jit_compile, "rounds": F.rounds,
                          "steps": F.steps}
    for name, seconds in step_seconds.items():
        spread = result["round_step_ms"][name]
        print(f"{name:>9}: {1000 * seconds:8.1f} ms/step  "
              f"{config.batch_size / seconds:8.0f} images/s  "
              f"(rounds {min(spread):.1f}..{max(spread):.1f} ms)")
    if "input_images_per_sec" in result:
        print(f"    input: {result['input_images_per_sec']:8.0f} images/s from the "
              f"training pipeline alone")
    if table:
        print(f"kernel time by op type (host CPU; trace in {F.profile_dir}):\n{table}")
    estimate = result["estimated_run"]
    print(f"one run of {estimate['epochs']} epochs x {estimate['images_per_epoch']} images, "
          f"evaluating {estimate['eval_samples']} images every {estimate['eval_every']} "
          f"epoch(s): about {estimate['total_hours']:.1f} h here "
          f"({estimate['train_hours']:.1f} h training, {estimate['eval_hours']:.1f} h "
          f"evaluation)")
    if F.eval_images:
        by_flops = (f" ({100 * result['flops']['eval_flop_share']:.0f}% by FLOPs: "
                    f"{result['flops']['eval_gflop_per_image']:.2f} GFLOP per evaluated image, "
                    f"{result['flops']['train_gflop_per_image']:.2f} per training image)"
                    if "flops" in result else "")
        print(f"one evaluation costs {100 * estimate['eval_share']:.0f}% of an epoch's training "
              f"here{by_flops}; --eval_every={estimate['eval_every_for_10_percent']} keeps it "
              "under 10%")
    if "flops" in result:
        print(f"one run is {result['flops']['run_pflop']:.1f} PFLOP (training and evaluations)")
    print(json.dumps(result))
    checkpoints.cleanup()


if __name__ == "__main__":
    run_command(main)
