"""Fetch what a grid's runs will read, once, before they start:
``python -m tfgan_exp.prepare --dataset=cifar10,stl10 [--data_dir=DIR] [--inception_model=M]``.

On a cluster every task of a job array would otherwise download and prepare the same
TFDS dataset into one shared folder at the same moment, and fetch the same Inception
module; the job files run this first, as a job of its own. It prepares each dataset
(TFDS's ``download_and_prepare``, as training does) and resolves the Inception module
into ``TFHUB_CACHE_DIR`` (skipped for ``--inception_model=none``, for a local directory,
and when only digits are asked for). Exit status 0 when all is ready, 2 with a message
when something cannot be had.
"""
import os
import sys

from absl import flags

import tfgan_exp  # noqa: F401  (selects tf_keras before TensorFlow is imported)
from tfgan_exp.command_line import fail, run_command
from tfgan_exp.config import DATASET_DEFAULTS, INCEPTION_URL, UsageError

F = flags.FLAGS


def define_flags() -> None:
    """Only when run as a command: ``prepare`` is imported by tests beside the score
    command, whose --dataset and --inception_model flags would clash with these."""
    flags.DEFINE_list("dataset", ["digits"], "Datasets to prepare: any of "
                      f"{', '.join(DATASET_DEFAULTS)}, comma-separated.")
    flags.DEFINE_string("data_dir", "", "TFDS directory to prepare them in (TFDS default "
                        "if empty).")
    flags.DEFINE_string("inception_model", INCEPTION_URL,
                        "TF-Hub URL to fetch into TFHUB_CACHE_DIR; a local directory or "
                        "'none' is left as it is.")


def prepare(datasets, data_dir: str, inception_model: str) -> None:
    """Prepares ``datasets`` and fetches ``inception_model``; raises UsageError."""
    unknown = [d for d in datasets if d not in DATASET_DEFAULTS]
    if unknown or not datasets:
        raise UsageError(f"--dataset={','.join(datasets)}: choose from "
                         f"{', '.join(DATASET_DEFAULTS)}")
    from tfgan_exp import data
    for dataset in datasets:
        size = DATASET_DEFAULTS[dataset]["image_size"]
        images = data.load_images(dataset, size, data_dir)
        print(f"{dataset}: {len(images)} training images ready", file=sys.stderr)
    if set(datasets) != {"digits"} and "://" in inception_model:
        from tfgan_exp.evaluation.classifiers import InceptionClassifier
        InceptionClassifier(inception_model)  # loads it: fetched, and checked to work
        print(f"Inception module ready ({inception_model}, kept in "
              f"{os.environ.get('TFHUB_CACHE_DIR', 'the TF-Hub cache')})", file=sys.stderr)


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected argument(s) {argv[1:]}; see --help")
    try:
        prepare(F.dataset, F.data_dir, F.inception_model)
    except UsageError as error:
        fail(str(error))


if __name__ == "__main__":
    define_flags()
    run_command(main)
