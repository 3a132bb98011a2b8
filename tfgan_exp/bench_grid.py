"""``python -m tfgan_exp.bench_grid``: the command's code is ``bench/launchers.py``."""
from tfgan_exp.bench import launchers
from tfgan_exp.command_line import run_command

if __name__ == "__main__":
    run_command(launchers.main, home=launchers)
