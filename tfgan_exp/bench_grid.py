"""One grid run one after another versus ``--parallel``: ``python -m tfgan_exp.bench_grid``.

Times ``run.py`` itself, as a user starts it, on a grid of short digits runs (by default
2 losses x 2 seeds = 4 runs): once with the runs one after another in one process, once
with ``--parallel=P`` (each run a process of its own, pinned to its share of the cores),
alternating which goes first over ``--rounds`` rounds. Every round trains into fresh
folders and shares one warm cache (the digits classifier and the real images' features
are computed before timing starts). Prints each wall time and, as its last line, one
JSON object with ``sequential_seconds``, ``parallel_seconds`` (medians over rounds) and
``parallel_speedup`` (sequential / parallel).
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import flags

import tfgan_exp  # noqa: F401
from tfgan_exp.command_line import fail, run_command

F = flags.FLAGS
flags.DEFINE_string("g_loss", "minimax,nonsat", "The grid's generator losses.")
flags.DEFINE_integer("seeds", 2, "Seeds per loss.")
flags.DEFINE_integer("epochs", 5, "Epochs per run.")
flags.DEFINE_integer("parallel", 2, "Runs at once in the parallel variant, >= 2.")
flags.DEFINE_integer("rounds", 2, "Rounds; each times both variants, the first going "
                     "first in odd rounds.")
flags.DEFINE_string("extra", "", "More run.py flags for every run, space-separated.")

RUN_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "run.py")


def grid_command(run_dir: str, cache_dir: str, parallel: int):
    return [sys.executable, RUN_PY, f"--g_loss={F.g_loss}", f"--seeds={F.seeds}",
            f"--epochs={F.epochs}", f"--cache_dir={cache_dir}", f"--run_dir={run_dir}",
            f"--parallel={parallel}", *F.extra.split()]


def timed(command) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        fail(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return seconds


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected argument(s) {argv[1:]}")
    if F.parallel < 2 or F.rounds < 1 or F.epochs < 1 or F.seeds < 1:
        fail("--parallel must be at least 2, --rounds, --epochs and --seeds at least 1")
    with tempfile.TemporaryDirectory(prefix="tfgan_exp-bench-grid-") as scratch:
        cache = os.path.join(scratch, "cache")
        # Warm the cache (classifier, real features) with one untimed one-epoch run.
        warm = [sys.executable, RUN_PY, "--epochs=1", f"--cache_dir={cache}",
                f"--run_dir={os.path.join(scratch, 'warm')}", *F.extra.split()]
        timed(warm)
        times = {"sequential": [], "parallel": []}
        for number in range(F.rounds):
            order = ["sequential", "parallel"] if number % 2 == 0 else ["parallel", "sequential"]
            for variant in order:
                run_dir = os.path.join(scratch, f"{variant}-{number}")
                parallel = 1 if variant == "sequential" else F.parallel
                seconds = timed(grid_command(run_dir, cache, parallel))
                times[variant].append(seconds)
                print(f"round {number + 1}: {variant} {seconds:.1f} s", flush=True)
    sequential = statistics.median(times["sequential"])
    parallel = statistics.median(times["parallel"])
    runs = len(F.g_loss.split(",")) * F.seeds
    print(f"{runs} runs of {F.epochs} epochs: one after another {sequential:.1f} s, "
          f"{F.parallel} at once {parallel:.1f} s: {sequential / parallel:.2f}x")
    print(json.dumps({"runs": runs, "epochs": F.epochs, "parallel": F.parallel,
                      "cpus": len(os.sched_getaffinity(0)),
                      "sequential_seconds": sequential, "parallel_seconds": parallel,
                      "parallel_speedup": sequential / parallel,
                      "round_seconds": times}))


if __name__ == "__main__":
    run_command(main)
