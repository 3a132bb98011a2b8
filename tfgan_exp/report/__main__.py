"""``python -m tfgan_exp.report DIR``: the report of every run under DIR (``writer.py``)."""
from tfgan_exp.command_line import run_command
from tfgan_exp.report import writer


if __name__ == "__main__":
    run_command(writer.main, home=writer)
