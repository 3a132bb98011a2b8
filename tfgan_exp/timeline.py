"""``python -m tfgan_exp.timeline TRACE``: the command's code is ``runtime/timeline.py``."""
from tfgan_exp.command_line import run_command
from tfgan_exp.runtime import timeline

if __name__ == "__main__":
    timeline.define_flags()
    run_command(timeline.main, home=timeline)
