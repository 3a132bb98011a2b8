"""Train a GAN: ``python run.py --dataset=stl10 --g_loss=nonsat`` (see --help)."""
from absl import flags

from tfgan_exp import cli

flags.adopt_module_key_flags(cli)  # so that --help lists the training flags

if __name__ == "__main__":
    cli.run()
