"""``python -m tfgan_exp.prepare``: the command's code is ``grids/prepare.py``."""
from tfgan_exp.command_line import run_command
from tfgan_exp.grids import prepare

if __name__ == "__main__":
    prepare.define_flags()
    run_command(prepare.main, home=prepare)
