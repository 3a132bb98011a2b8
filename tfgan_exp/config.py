"""The run configuration: a frozen, typed dataclass that validates itself.

``Config`` is the only thing the training code reads; ``cli.py`` builds it from flags,
and tests and notebooks build it directly. Zero or empty values mean "the dataset's
default" and are filled in by ``resolved()``; ``config.json`` holds the resolved values.
"""
import dataclasses
import json
import os
from typing import Any, Dict

DATASETS = ("digits", "cifar10", "stl10")
STRATEGIES = ("auto", "default", "mirrored", "multiworker", "tpu")
MIXED_PRECISION = ("", "bf16", "fp16")  # "" = float32; fp16 uses dynamic loss scaling
G_LOSS_NAMES = ("minimax", "nonsat", "hinge", "wgan-gp", "lsgan")
D_LOSS_NAMES = ("bce", "hinge", "wgan-gp", "lsgan")
# Each generator loss's discriminator partner, the default for --d_loss (README, the losses table).
D_PARTNER = {"minimax": "bce", "nonsat": "bce", "hinge": "hinge",
             "wgan-gp": "wgan-gp", "lsgan": "lsgan"}

INCEPTION_URL = "https://tfhub.dev/tensorflow/tfgan/eval/inception/1"
SPLITS = 10  # papers report the mean and std of the Inception Score over 10 splits

# Per-dataset defaults: image size (pixels), network width w, epochs, images per
# evaluation, and epochs between evaluations.
DATASET_DEFAULTS = {
    # Digits are upsampled to 32 px: at 16 px (M = 2) this network mode-collapses (digits
    # score about 3 after 60 epochs, every loss); at 32 px (M = 4, as on CIFAR) it scores 7.
    # Digits are scored every 3rd epoch by the same 10% rule: one evaluation (2,000
    # images, with KID and precision/recall) took 2.1-2.4 s on the 2-core machine where
    # an epoch's training took 9.4 s (26%); every 3rd epoch is 8.5%.
    "digits": {"image_size": 32, "width": 16, "epochs": 60, "eval_samples": 2000,
               "eval_every": 3},
    # Evaluating 10,000 images through Inception (11.5 GFLOP each with the resize) every
    # epoch would cost 72% of a CIFAR-10 epoch's training compute (50,000 x 3.2 GFLOP)
    # and 16% of an STL-10 epoch's (100,000 x 7.2 GFLOP at 48 px); every 8th and every
    # 2nd epoch keeps it under 10% (python -m tfgan_exp.bench prints both counts).
    "cifar10": {"image_size": 32, "width": 64, "epochs": 300, "eval_samples": 10000,
                "eval_every": 8},
    "stl10": {"image_size": 48, "width": 64, "epochs": 300, "eval_samples": 10000,
              "eval_every": 2},
}


# Named settings for --preset. "strong_d" is the article's STL-10 setting in spirit: a
# discriminator that outpaces the generator (3 updates per G update at twice G's learning
# rate), so D's loss heads toward zero and the saturating loss's gradient can vanish.
# "wgan_gp_paper" is Gulrajani et al.'s (2017) setting for WGAN-GP (their Algorithm 1:
# 5 critic updates per generator update, Adam with lr 1e-4 and betas (0, 0.9)); without
# it, wgan-gp trains with DCGAN's Adam settings, as every other loss does.
PRESETS = {
    "strong_d": {"d_steps": 3, "lr_d": 4e-4},
    "wgan_gp_paper": {"d_steps": 5, "lr_g": 1e-4, "lr_d": 1e-4, "beta1": 0.0, "beta2": 0.9},
}


# Settings that say where a run goes, how fast, or how it is kept, never what it
# computes: they are not grid axes, they do not name a report's groups, and a run may
# be resumed with them changed.
NON_RESULT_SETTINGS = frozenset({
    "data_dir", "strategy", "tpu", "steps_per_execution", "jit_compile", "deterministic",
    "inception_model", "cache_dir", "run_dir", "keep_checkpoints", "checkpoint_every_steps",
    "overwrite", "retry_diverged"})

def resolved_settings(saved: Dict[str, Any]) -> Dict[str, Any]:
    """A config.json's settings as this version resolves them: settings it lacks
    (written by an older version) take their defaults and are resolved ("0 = the
    dataset's default" becomes that default); keys this version does not know are kept
    as they are."""
    known = {f.name for f in dataclasses.fields(Config)}
    values = {k: v for k, v in saved.items() if k in known}
    try:
        resolved = dataclasses.asdict(Config(**values).resolved())
    except (UsageError, TypeError, KeyError):  # settings this version refuses
        resolved = dict(dataclasses.asdict(Config()), **values)
    return dict(saved, **resolved)


def run_identity(settings: Dict[str, Any], resumable: bool = False) -> tuple:
    """What makes two runs one run: every resolved setting that changes what a run
    computes, the seed included, as sorted (name, value) pairs; folder names play no
    part. ``settings``: a Config's fields or a config.json (``resolved_settings``).
    With ``resumable``, the settings a run may change when it resumes (its epochs, how
    often it is evaluated) are left out too: what may continue a run, not what it is."""
    left_out = RESUMABLE_SETTINGS if resumable else NON_RESULT_SETTINGS
    values = resolved_settings(settings)
    return tuple(sorted((k, v) for k, v in values.items() if k not in left_out))


# Settings that change results but may still change on resuming: a finished run can be
# trained longer, and evaluated more or less often from there on.
RESUMABLE_SETTINGS = NON_RESULT_SETTINGS | {"epochs", "eval_every"}


class TrainingDiverged(Exception):
    """A loss or gradient norm became NaN or infinite; the last good checkpoint is kept.

    The command-line tool prints its message and exits with status 3.
    """


class UsageError(Exception):
    """A user's mistake: bad flag, unusable path, data or model that cannot be had.

    The command-line tools print its message and exit with status 2, no traceback.
    """


@dataclasses.dataclass(frozen=True)
class Config:
    # data
    dataset: str = "digits"
    data_dir: str = ""          # prepared TFDS directory; "" = TFDS default (~/tensorflow_datasets)
    image_size: int = 0         # pixels, square, multiple of 8; 0 = dataset default
    # losses and networks
    g_loss: str = "nonsat"
    d_loss: str = ""            # "" = the generator loss's partner
    gp_weight: float = 10.0     # lambda of the WGAN-GP gradient penalty
    spectral_norm: bool = False
    width: int = 0              # channels of the widest-but-three layer (64 in SN-GAN); 0 = default
    latent_dim: int = 128
    # optimisation
    epochs: int = 0             # 0 = dataset default
    batch_size: int = 64        # global batch, split across replicas
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    d_steps: int = 1            # discriminator updates per generator update
    seed: int = 0
    # distribution and speed
    strategy: str = "auto"
    tpu: str = ""               # TPU name or address, or "local" on a TPU VM
    steps_per_execution: int = 1
    mixed_precision: str = ""   # "" (float32), "bf16" or "fp16"; D's logits stay float32
    jit_compile: bool = False   # XLA-compile the train step
    # evaluation
    eval_every: int = -1        # epochs between evaluations; 0 = never (the last epoch
                                # always), -1 = the dataset's default
    eval_samples: int = 0       # generated images per evaluation; 0 = dataset default
    inception_model: str = INCEPTION_URL  # TF-Hub URL, local SavedModel dir, or "none"
    cache_dir: str = ""         # classifiers and real-image statistics; "" = ~/.cache/tfgan_exp
    # outputs
    run_dir: str = ""           # "" = runs/<dataset>-<g_loss>-seed<seed>
    keep_checkpoints: int = 3
    checkpoint_every_steps: int = 0  # also save within epochs, every N global steps; 0 = no
    deterministic: bool = False  # enable_op_determinism: bit-identical reruns and resumes
    overwrite: bool = False     # delete an existing run directory and start again
    retry_diverged: bool = False  # train a run that diverged before again, from its
                                  # last good checkpoint (else it is skipped)

    def resolved(self) -> "Config":
        """Returns a copy with every "default" (0 or "") replaced by its value; validates."""
        self.validate()
        defaults = DATASET_DEFAULTS[self.dataset]
        changes: Dict[str, Any] = {
            key: defaults[key] for key in ("image_size", "width", "epochs", "eval_samples")
            if not getattr(self, key)}
        if self.eval_every < 0:  # 0 means "never", so the default has its own sentinel
            changes["eval_every"] = defaults["eval_every"]
        if not self.d_loss:
            changes["d_loss"] = D_PARTNER[self.g_loss]
        if not self.run_dir:
            changes["run_dir"] = os.path.join(
                "runs", f"{self.dataset}-{self.g_loss}-seed{self.seed}")
        config = dataclasses.replace(self, **changes)
        config.validate()
        return config

    def validate(self) -> None:
        """Raises UsageError naming the first bad field, its value and what is allowed."""
        _choice("dataset", self.dataset, DATASETS)
        _choice("g_loss", self.g_loss, G_LOSS_NAMES)
        if self.d_loss:
            _choice("d_loss", self.d_loss, D_LOSS_NAMES)
        _choice("strategy", self.strategy, STRATEGIES)
        if self.mixed_precision not in MIXED_PRECISION:
            raise UsageError(f"--mixed_precision={self.mixed_precision}: unknown; choose bf16, "
                             "fp16, or leave it empty for float32")
        for name, low, high in (("image_size", 0, 512), ("width", 0, 1024),
                                ("latent_dim", 1, 4096), ("epochs", 0, 100_000),
                                ("batch_size", 1, 65_536), ("d_steps", 1, 100),
                                ("seed", 0, 2**31 - 1), ("steps_per_execution", 1, 10_000),
                                ("keep_checkpoints", 1, 1000), ("eval_every", -1, 100_000),
                                ("checkpoint_every_steps", 0, 10**9),
                                ("eval_samples", 0, 1_000_000)):
            _integer(name, getattr(self, name), low, high)
        if self.image_size % 8:
            raise UsageError(f"--image_size={self.image_size}: must be a multiple of 8 "
                             "(the generator doubles M = size/8 three times), e.g. 16, 32, 48")
        if 0 < self.eval_samples < 10:
            raise UsageError(f"--eval_samples={self.eval_samples}: must be at least 10 "
                             "(the score is also reported over 10 splits)")
        if not self.inception_model:
            raise UsageError("--inception_model is empty: give a TF-Hub URL, a directory "
                             "holding the SavedModel, or none")
        if 0 < self.image_size < 8:
            raise UsageError(f"--image_size={self.image_size}: must be at least 8")
        for name, low, high in (("lr_g", 0.0, 1.0), ("lr_d", 0.0, 1.0)):
            _real(name, getattr(self, name), low, high, low_open=True)
        for name in ("beta1", "beta2"):
            _real(name, getattr(self, name), 0.0, 1.0, high_open=True)
        _real("gp_weight", self.gp_weight, 0.0, 1e6)
        for name in ("spectral_norm", "overwrite", "deterministic", "jit_compile",
                     "retry_diverged"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"--{name}={getattr(self, name)!r}: must be true or false")
        if self.strategy == "tpu" and not self.tpu and not os.environ.get("TPU_NAME"):
            raise UsageError("--strategy=tpu needs --tpu=NAME_OR_ADDRESS "
                             "(or --tpu=local on a TPU VM)")
        on_tpu = self.strategy == "tpu" or (
            self.strategy == "auto" and bool(self.tpu or os.environ.get("TPU_NAME")))
        if on_tpu and self.mixed_precision == "fp16":
            raise UsageError("--mixed_precision=fp16 on a TPU: TPUs have no float16 "
                             "arithmetic; use --mixed_precision=bf16")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "Config":
        """Builds a Config, refusing unknown keys and values of the wrong type."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise UsageError(f"unknown setting(s) {unknown}; known: {sorted(fields)}")
        for key, value in values.items():
            expected = type(getattr(cls(), key))
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                continue
            if type(value) is not expected:
                raise UsageError(f"setting {key}={value!r}: expected {expected.__name__}")
        return cls(**values)


def _choice(name, value, choices):
    if value not in choices:
        raise UsageError(f"--{name}={value}: unknown; choose one of {', '.join(choices)}")


def _integer(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UsageError(f"--{name}={value}: must be an integer from {low} to {high}")


def _real(name, value, low, high, low_open=False, high_open=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (low < value if low_open else low <= value) and (
            value < high if high_open else value <= high)
    if not ok:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise UsageError(f"--{name}={value}: must be a number in {lo}{low}, {high}{hi}")
