"""``python -m tfgan_exp.score IMAGES``: the command's code is ``evaluation/score.py``."""
from tfgan_exp.command_line import run_command
from tfgan_exp.evaluation import score

if __name__ == "__main__":
    run_command(score.main, home=score)
