"""``python -m tfgan_exp.bench``: the training step, the evaluation, FLOPs (``step.py``)."""
from tfgan_exp.bench import step
from tfgan_exp.command_line import run_command


if __name__ == "__main__":
    run_command(step.main, home=step)
