"""A grid three ways, side by side: ``python -m tfgan_exp.bench_grid``.

Times ``run.py`` itself, as a user starts it, on a grid of short digits runs (by default
2 losses x 3 seeds = 6 runs of 5 epochs, three for each of two slots):

- ``sequential``: one after another in one process (``--parallel=1``);
- ``process_per_run``: ``--parallel=P --process_per_run``, a fresh process per run (how
  ``--parallel`` worked before slots);
- ``slots``: ``--parallel=P``, P processes that each train run after run.

The variants go in a rotating order over ``--rounds`` rounds, each into fresh folders
with one warm cache (the digits classifier and the real images' features are made
before timing starts). Prints each wall time and efficiency (the grid's timeline: the
epochs' seconds over slots x wall) and, as its last line, one JSON object with each
variant's median ``seconds`` and ``efficiency`` over the rounds, ``slots_speedup``
(process_per_run / slots) and ``parallel_speedup`` (sequential / slots).
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
flags.DEFINE_integer("seeds", 3, "Seeds per loss.")
flags.DEFINE_integer("epochs", 5, "Epochs per run.")
flags.DEFINE_integer("parallel", 2, "Runs at once in the parallel variants, >= 2.")
flags.DEFINE_integer("rounds", 2, "Rounds; each times every variant, in a rotating order.")
flags.DEFINE_string("extra", "", "More run.py flags for every run, space-separated.")

RUN_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "run.py")
VARIANTS = {"sequential": ["--parallel=1"],
            "process_per_run": ["--parallel={P}", "--process_per_run"],
            "slots": ["--parallel={P}"]}


def grid_command(run_dir: str, cache_dir: str, variant: str):
    """The run.py command that trains the grid as ``variant`` does."""
    flags_of = [flag.format(P=F.parallel) for flag in VARIANTS[variant]]
    return [sys.executable, RUN_PY, f"--g_loss={F.g_loss}", f"--seeds={F.seeds}",
            f"--epochs={F.epochs}", f"--cache_dir={cache_dir}", f"--run_dir={run_dir}",
            *flags_of, *F.extra.split()]


def timed(command) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        fail(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return seconds


def efficiency(run_dir: str) -> float:
    with open(os.path.join(run_dir, "timeline.json")) as handle:
        return float(json.load(handle)["otherData"]["efficiency"])


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected argument(s) {argv[1:]}")
    if F.parallel < 2 or F.rounds < 1 or F.epochs < 1 or F.seeds < 1:
        fail("--parallel must be at least 2, --rounds, --epochs and --seeds at least 1")
    names = list(VARIANTS)
    results = {name: {"seconds": [], "efficiency": []} for name in names}
    with tempfile.TemporaryDirectory(prefix="tfgan_exp-bench-grid-") as scratch:
        cache = os.path.join(scratch, "cache")
        # Warm the cache (classifier, real features) with one untimed one-epoch run.
        timed([sys.executable, RUN_PY, "--epochs=1", f"--cache_dir={cache}",
               f"--run_dir={os.path.join(scratch, 'warm')}", *F.extra.split()])
        for number in range(F.rounds):
            order = names[number % len(names):] + names[:number % len(names)]
            for variant in order:
                run_dir = os.path.join(scratch, f"{variant}-{number}")
                seconds = timed(grid_command(run_dir, cache, variant))
                results[variant]["seconds"].append(seconds)
                results[variant]["efficiency"].append(efficiency(run_dir))
                print(f"round {number + 1}: {variant} {seconds:.1f} s, efficiency "
                      f"{results[variant]['efficiency'][-1]:.2f}", flush=True)
    medians = {name: {key: statistics.median(values) for key, values in result.items()}
               for name, result in results.items()}
    runs = len(F.g_loss.split(",")) * F.seeds
    print(f"{runs} runs of {F.epochs} epochs: " + "; ".join(
        f"{name} {m['seconds']:.1f} s (efficiency {m['efficiency']:.2f})"
        for name, m in medians.items()) +
        f"; slots {medians['process_per_run']['seconds'] / medians['slots']['seconds']:.2f}x "
        "process per run")
    print(json.dumps({
        "runs": runs, "epochs": F.epochs, "parallel": F.parallel,
        "cpus": len(os.sched_getaffinity(0)), "variants": medians,
        "slots_speedup": medians["process_per_run"]["seconds"] / medians["slots"]["seconds"],
        "parallel_speedup": medians["sequential"]["seconds"] / medians["slots"]["seconds"],
        "rounds": results}))


if __name__ == "__main__":
    run_command(main)
