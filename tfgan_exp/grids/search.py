"""Random hyperparameter search: ``--search=N`` draws N settings from ``SEARCH_SPACE``.

Lucic et al. 2018 ("Are GANs Created Equal?") found that the ranking of GAN losses can
change once learning rates, Adam's betas and the discriminator's update count are
searched: one setting can favour one loss. A search answers "which loss is better at
its best, for a given budget of settings tried".

The same N settings are given to every loss of the grid (a paired design: each loss
meets the same draws, so their budget curves differ only by the loss). Draws depend
only on ``--search_seed``, so a search is reproducible and can be extended: the first
N settings of ``--search=2N`` are those of ``--search=N``.
"""
import math
from typing import Dict, List

import numpy as np

from tfgan_exp.config import run_identity

# One learning rate for both networks, log-uniform over two decades around DCGAN's 2e-4;
# Adam's betas at DCGAN's (0.5, 0.999), WGAN-GP's (0, 0.9) and the mixes; 1, 2 or 5
# discriminator updates per generator update. Learning rates are rounded to two
# significant digits so that a setting reads, and types back, as a flag.
SEARCH_SPACE = {
    "lr": ("log-uniform", 1e-5, 1e-3),   # --lr_g and --lr_d
    "beta1": ("choice", 0.0, 0.5),
    "beta2": ("choice", 0.9, 0.999),
    "d_steps": ("choice", 1, 2, 5),
}
# The Config fields a drawn setting sets (lr sets both learning rates).
SEARCHED_FIELDS = ("lr_g", "lr_d", "beta1", "beta2", "d_steps")


def describe_space() -> str:
    """One line a person can read: the space the settings are drawn from."""
    parts = []
    for name, (kind, *values) in SEARCH_SPACE.items():
        if kind == "log-uniform":
            parts.append(f"{name} log-uniform in [{values[0]:g}, {values[1]:g}]")
        else:
            parts.append(f"{name} in {{{', '.join(f'{v:g}' for v in values)}}}")
    return "; ".join(parts)


def _round_significant(value: float, digits: int = 2) -> float:
    return float(f"{value:.{digits - 1}e}")


def draw_settings(count: int, seed: int = 0) -> List[Dict[str, float]]:
    """``count`` settings, each {lr_g, lr_d, beta1, beta2, d_steps}; trial i depends
    only on (seed, i), so longer searches extend shorter ones."""
    settings = []
    for trial in range(count):
        rng = np.random.default_rng([seed, trial])
        low, high = SEARCH_SPACE["lr"][1:]
        lr = _round_significant(math.exp(rng.uniform(math.log(low), math.log(high))))
        drawn = {"lr_g": lr, "lr_d": lr}
        for name in ("beta1", "beta2", "d_steps"):
            choices = SEARCH_SPACE[name][1:]
            drawn[name] = choices[int(rng.integers(len(choices)))]
        settings.append(drawn)
    return settings


def tuned_key(settings: dict) -> tuple:
    """What a tuned re-run (``--tuned_from``) shares with the search trial whose setting
    it re-runs: every setting that changes results but the searched ones, the seed, and
    how long and how often it trains and is evaluated (it may train longer)."""
    skipped = set(SEARCHED_FIELDS) | {"seed", "epochs", "eval_every", "eval_samples"}
    return tuple((k, v) for k, v in run_identity(settings) if k not in skipped)
