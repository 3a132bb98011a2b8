"""Config validation: every bad value is named with what is allowed."""
import dataclasses
import json

import pytest

from tfgan_exp.config import Config, UsageError

BAD = [
    (dict(dataset="mnist"), "--dataset=mnist: unknown; choose one of digits, cifar10, stl10"),
    (dict(g_loss="saturating"), "--g_loss=saturating: unknown; choose one of minimax"),
    (dict(d_loss="wgan"), "--d_loss=wgan: unknown"),
    (dict(strategy="horovod"), "--strategy=horovod: unknown"),
    (dict(image_size=20), "--image_size=20: must be a multiple of 8"),
    (dict(image_size=-8), "--image_size=-8: must be an integer from 0"),
    (dict(batch_size=0), "--batch_size=0: must be an integer from 1"),
    (dict(epochs=-1), "--epochs=-1: must be an integer from 0"),
    (dict(d_steps=0), "--d_steps=0: must be an integer from 1"),
    (dict(latent_dim=0), "--latent_dim=0"),
    (dict(lr_g=0.0), "--lr_g=0.0: must be a number in (0.0, 1.0]"),
    (dict(lr_d=float("nan")), "--lr_d=nan"),
    (dict(beta1=1.0), "--beta1=1.0: must be a number in [0.0, 1.0)"),
    (dict(gp_weight=-1.0), "--gp_weight=-1.0"),
    (dict(seed=-1), "--seed=-1"),
    (dict(eval_every=-2), "--eval_every=-2: must be an integer from -1 to 100000"),
    (dict(strategy="tpu"), "--strategy=tpu needs --tpu"),
    (dict(strategy="tpu", tpu="local", mixed_precision="fp16"), "use --mixed_precision=bf16"),
    (dict(retry_diverged=1), "--retry_diverged=1: must be true or false"),
]


@pytest.mark.parametrize("overrides, message", BAD)
def test_bad_values_are_named(overrides, message, monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    with pytest.raises(UsageError) as error:
        Config(**overrides).resolved()
    assert message in str(error.value)


def test_defaults_resolve_per_dataset():
    digits = Config().resolved()
    assert (digits.image_size, digits.width, digits.epochs, digits.d_loss) == (32, 16, 60, "bce")
    assert digits.run_dir == "runs/digits-nonsat-seed0"
    stl = Config(dataset="stl10", g_loss="hinge", seed=2).resolved()
    assert (stl.image_size, stl.width, stl.d_loss) == (48, 64, "hinge")
    assert stl.run_dir == "runs/stl10-hinge-seed2"
    assert Config(dataset="cifar10", image_size=64, epochs=5).resolved().image_size == 64


def test_from_dict_refuses_unknown_keys_and_wrong_types():
    values = json.loads(Config().resolved().to_json())
    assert Config.from_dict(values) == Config().resolved()
    with pytest.raises(UsageError, match="unknown setting"):
        Config.from_dict({"g_los": "hinge"})  # a misspelled key is not silently ignored
    with pytest.raises(UsageError, match="expected int"):
        Config.from_dict({"batch_size": "64"})
    assert Config.from_dict({"lr_g": 1})  # an int is a valid float
    assert dataclasses.is_dataclass(Config)


def test_evaluation_cadence_defaults_per_dataset_and_an_explicit_one_is_kept():
    assert [Config(dataset=name).resolved().eval_every for name in ("digits", "cifar10",
                                                                     "stl10")] == [3, 8, 2]
    assert Config(dataset="cifar10", eval_every=1).resolved().eval_every == 1  # the article's
    assert Config(dataset="cifar10", eval_every=0).resolved().eval_every == 0  # never
