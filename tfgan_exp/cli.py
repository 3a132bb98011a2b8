"""Command-line flags -> Config -> training. The only module that reads flags.

Every user mistake ends here as one line on stderr and exit status 2, before training.
"""
import dataclasses
import itertools
import os
import sys
from typing import List

from absl import app, flags

import tfgan_exp  # noqa: F401  (selects tf_keras before TensorFlow is imported)
from tfgan_exp.config import (D_LOSS_NAMES, DATASETS, G_LOSS_NAMES, INCEPTION_URL,
                              PRESETS, STRATEGIES, Config, TrainingDiverged, UsageError)

F = flags.FLAGS

flags.DEFINE_string("dataset", "digits", f"Dataset: {', '.join(DATASETS)}, or a comma "
                    "list for a grid. digits is bundled (offline); cifar10 and stl10 come "
                    "from TFDS.")
flags.DEFINE_string("data_dir", "", "Directory of prepared TFDS data (default: TFDS's own).")
flags.DEFINE_integer("image_size", 0, "Image side in pixels, a multiple of 8, 8..512; "
                     "0 = the dataset's default (digits 32, cifar10 32, stl10 48).")
flags.DEFINE_string("g_loss", "nonsat", f"Generator loss: {', '.join(G_LOSS_NAMES)}, or a "
                    "comma list for a grid. minimax is the saturating min log(1 - D(G(z))); "
                    "nonsat is max log D(G(z)).")
flags.DEFINE_string("d_loss", "", f"Discriminator loss: {', '.join(D_LOSS_NAMES)}; "
                    "empty = the generator loss's partner (bce for minimax and nonsat).")
flags.DEFINE_float("gp_weight", 10.0, "WGAN-GP gradient penalty weight lambda, >= 0.")
flags.DEFINE_boolean("spectral_norm", False, "Spectral normalisation on D's layers.")
flags.DEFINE_integer("width", 0, "Network width w in channels (D goes w..8w, G 8w..w), "
                     "1..1024; 0 = default (64, or 16 for digits).")
flags.DEFINE_integer("latent_dim", 128, "Dimension of the noise z ~ N(0, I), 1..4096.")
flags.DEFINE_integer("epochs", 0, "Passes over the training images, 1..100000; "
                     "0 = default (digits 60, cifar10 and stl10 300).")
flags.DEFINE_integer("batch_size", 64, "Global batch in images per D update, 1..65536, "
                     "split across replicas (must divide by their number).")
flags.DEFINE_float("lr_g", 2e-4, "Generator Adam learning rate, in (0, 1].")
flags.DEFINE_float("lr_d", 2e-4, "Discriminator Adam learning rate, in (0, 1].")
flags.DEFINE_float("beta1", 0.5, "Adam beta1 for both networks, in [0, 1).")
flags.DEFINE_float("beta2", 0.999, "Adam beta2 for both networks, in [0, 1).")
flags.DEFINE_integer("d_steps", 1, "Discriminator updates per generator update, 1..100.")
flags.DEFINE_string("seed", "0", "Random seed for weights, data order and noise, "
                    "0..2^31-1, or a comma list for a grid.")
flags.DEFINE_integer("seeds", 0, "Run seeds 0..N-1 (a grid; overrides --seed), 0..1000.")
flags.DEFINE_string("preset", "", f"Named settings, applied under any flag you set: "
                    f"{', '.join(f'{k} ({v})' for k, v in PRESETS.items())}.")
flags.DEFINE_string("strategy", "auto", f"Distribution: {', '.join(STRATEGIES)}. auto = tpu "
                    "if --tpu or TPU_NAME is set, mirrored on 2+ GPUs, else default.")
flags.DEFINE_string("tpu", "", "TPU name or grpc:// address, or 'local' on a TPU VM.")
flags.DEFINE_integer("steps_per_execution", 1, "Training steps per tf.function call, 1..10000.")
flags.DEFINE_integer("eval_every", -1, "Epochs between evaluations (score, FID), 0..100000; "
                     "0 = never; -1 = the dataset's default (digits 1, cifar10 8, stl10 2: "
                     "evaluation under 10% of training compute). The last epoch is always "
                     "evaluated when evaluation is on.")
flags.DEFINE_integer("eval_samples", 0, "Generated images per evaluation, >= 10; also the "
                     "number of real images for FID. 0 = default (digits 2000, else 10000).")
flags.DEFINE_string("inception_model", INCEPTION_URL, "Inception for IS and FID: the TF-Hub "
                    "URL, a local directory holding that SavedModel, or 'none'. Digits use "
                    "their own small classifier instead.")
flags.DEFINE_string("cache_dir", "", "Cache of the digits classifier and real-image "
                    "statistics; default $TFGAN_EXP_CACHE or ~/.cache/tfgan_exp.")
flags.DEFINE_string("mixed_precision", "", "Mixed precision: bf16, fp16 (with dynamic loss "
                    "scaling for both optimizers), or empty for float32. The discriminator's "
                    "logits and the losses stay float32.")
flags.DEFINE_boolean("jit_compile", False, "XLA-compile the training step.")
flags.DEFINE_string("run_dir", "", "Output directory; running again resumes it. "
                    "Default: runs/<dataset>-<g_loss>-seed<seed>.")
flags.DEFINE_integer("keep_checkpoints", 3, "How many of the newest checkpoints to keep, >= 1.")
flags.DEFINE_boolean("overwrite", False, "Delete an existing --run_dir and start again.")
flags.DEFINE_integer("checkpoint_every_steps", 0, "Also checkpoint within epochs, every N "
                     "global steps (0 = only at epoch ends), 0..10^9.")
flags.DEFINE_boolean("deterministic", False, "Deterministic ops (tf enable_op_determinism): "
                     "a killed and resumed run equals the uninterrupted one, bit for bit. "
                     "Slower on GPU.")


GRID_FLAGS = ("dataset", "g_loss", "seed")


def _seeds() -> List[int]:
    if F.seeds:
        if not 1 <= F.seeds <= 1000:
            raise UsageError(f"--seeds={F.seeds}: must be an integer from 1 to 1000")
        return list(range(F.seeds))
    try:
        return [int(part) for part in _parts("seed")]
    except ValueError:
        raise UsageError(f"--seed={F.seed}: must be an integer 0..2^31-1 or a comma list "
                         "of them") from None


def _parts(name: str) -> List[str]:
    parts = [part.strip() for part in str(F[name].value).split(",")]
    if any(not part for part in parts):
        raise UsageError(f"--{name}={F[name].value}: an empty item in the list")
    return parts


def configs_from_flags() -> List[Config]:
    """The runs the flags ask for: one, or every combination of the grid flags.

    In a grid each run goes to ``<run_dir>/<dataset>-<g_loss>-seed<seed>``, with
    ``run_dir`` defaulting to ``runs/grid``. A preset's values apply to every flag the
    user did not set.
    """
    names = [f.name for f in dataclasses.fields(Config)]
    values = {name: F[name].value for name in names if name not in GRID_FLAGS}
    if F.preset:
        if F.preset not in PRESETS:
            raise UsageError(f"--preset={F.preset}: unknown; choose one of "
                             f"{', '.join(PRESETS)}")
        values.update({k: v for k, v in PRESETS[F.preset].items() if not F[k].present})
    combos = list(itertools.product(_parts("dataset"), _parts("g_loss"), _seeds()))
    grid = len(combos) > 1 or bool(F.seeds)
    configs = []
    for dataset, g_loss, seed in combos:
        run_values = dict(values, dataset=dataset, g_loss=g_loss, seed=seed)
        if grid:
            run_values["run_dir"] = os.path.join(values["run_dir"] or os.path.join("runs", "grid"),
                                                 f"{dataset}-{g_loss}-seed{seed}")
        configs.append(Config(**run_values).resolved())
    return configs


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv):
    from absl import logging
    logging.set_verbosity(logging.WARNING)  # hide TensorFlow's per-checkpoint INFO lines
    if len(argv) > 1:
        fail(f"unexpected argument(s) {argv[1:]}; every setting is a --flag (see --help)")
    try:
        configs = configs_from_flags()  # every run of a grid is checked before the first
        from tfgan_exp import training  # imports TensorFlow: after the flags are checked
        for number, config in enumerate(configs, start=1):
            if len(configs) > 1:
                print(f"[grid {number}/{len(configs)}] {config.run_dir}", file=sys.stderr)
            training.run(config)
    except UsageError as error:
        fail(str(error))
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(3)
    except training.Interrupted as error:
        print(f"stopped: {error}", file=sys.stderr)
        sys.exit(128 + error.signum)  # the shell's convention for "killed by a signal"


def run():
    app.run(main)
