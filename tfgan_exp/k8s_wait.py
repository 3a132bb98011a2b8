"""``python -m tfgan_exp.k8s_wait JOB``: the command's code is ``grids/k8s_wait.py``."""
from tfgan_exp.command_line import run_command
from tfgan_exp.grids import k8s_wait

if __name__ == "__main__":
    run_command(k8s_wait.main, home=k8s_wait)
