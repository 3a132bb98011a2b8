"""Before a grid trains its first run: can every run it will train start?

A problem that a run meets only when its turn comes (a dataset that is not there, an
Inception model that cannot be had, a folder that cannot be written) would otherwise
stop a grid hours in, after some runs trained. ``check`` finds them for every run a
command will train, before the first one starts, and reports them all at once:

- each run folder (or the nearest folder above it that exists) is writable: a file is
  created there and removed (``os.access`` alone says yes to root for ``/proc``);
- each dataset can be had: digits always; CIFAR-10 and STL-10 when prepared in
  ``--data_dir`` or when their download can start (``data.check_loadable``);
- the Inception model, where runs use it, can be had (``classifiers.check_inception``).

Nothing is loaded or downloaded; TensorFlow is imported only for a TFDS dataset or
Inception (which training needs anyway).
"""
from typing import List, Sequence

from tfgan_exp.config import Config, UsageError
from tfgan_exp.rundir import check_writable


def uses_inception(config: Config) -> bool:
    """Whether the run's evaluation needs the Inception model (digits use their own)."""
    return (config.dataset != "digits" and config.eval_every != 0
            and config.inception_model != "none")


def folder_problems(configs: Sequence[Config]) -> List[str]:
    """Why each run folder that cannot be written cannot be (one line per folder)."""
    problems = []
    for config in configs:
        try:
            check_writable(config.run_dir)
        except UsageError as error:
            if str(error) not in problems:
                problems.append(str(error))
    return problems


def check(configs: Sequence[Config]) -> None:
    """Raises UsageError listing every reason some run of ``configs`` could not start."""
    problems = folder_problems(configs)
    tfds_sets = sorted({(c.dataset, c.data_dir) for c in configs if c.dataset != "digits"})
    if tfds_sets:
        from tfgan_exp import data
        for dataset, data_dir in tfds_sets:
            try:
                data.check_loadable(dataset, data_dir)
            except UsageError as error:
                problems.append(str(error))
    models = sorted({c.inception_model for c in configs if uses_inception(c)})
    if models:
        from tfgan_exp.evaluation.classifiers import check_inception
        for handle in models:
            try:
                check_inception(handle)
            except UsageError as error:
                problems.append(str(error))
    if problems:
        shown = "\n  ".join(problem.replace("\n", "\n    ") for problem in problems)
        raise UsageError(f"{len(problems)} problem(s) found before the first run of the "
                         f"grid trained; nothing was trained:\n  {shown}")
