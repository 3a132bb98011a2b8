"""Command-line flags -> a grid of Configs -> training. The only module that reads the
training flags (the score, report and bench commands define their own).

Every setting that changes what a run computes takes a comma-separated list; every
combination then runs (``grid``), one after another or ``--parallel`` at once, or a
``--shard`` of them. Every user mistake ends here as one line on stderr and exit
status 2, before anything is trained or written.
"""
import dataclasses
import os
import sys
import time
from typing import List, Optional

STARTED = time.time()  # the command's start, as near as Python lets us see it

from absl import flags

import tfgan_exp  # noqa: F401  (selects tf_keras before TensorFlow is imported)
from tfgan_exp.grids import grid as grid_lib
from tfgan_exp.grids import search as search_lib
from tfgan_exp.runtime import stopping
from tfgan_exp.command_line import fail, print_error, run_command
from tfgan_exp.config import (D_LOSS_NAMES, DATASETS, G_LOSS_NAMES, INCEPTION_URL,
                              PRESETS, STRATEGIES, Config, TrainingDiverged, UsageError)

F = flags.FLAGS


class ListParser(flags.ArgumentParser):
    """A comma-separated list of one type: ``1e-4,2e-4`` -> [0.0001, 0.0002]."""

    def __init__(self, item_type):
        self.item_type = item_type

    def _item(self, text: str):
        if self.item_type is bool:
            lowered = text.lower()
            if lowered in ("true", "t", "1", "yes"):
                return True
            if lowered in ("false", "f", "0", "no"):
                return False
            raise ValueError(f"{text!r} is not true or false")
        if self.item_type is int:
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"{text!r} is not a whole number") from None
        if self.item_type is float:
            try:
                return float(text)
            except ValueError:
                raise ValueError(f"{text!r} is not a number") from None
        return text

    def parse(self, argument):
        if isinstance(argument, list):
            return argument
        if isinstance(argument, (bool, int, float)) and not isinstance(argument, str):
            return [argument]
        parts = [part.strip() for part in str(argument).split(",")]
        if len(parts) > 1 and any(not part for part in parts):
            raise ValueError(f"{argument!r} has an empty item")
        return [self._item(part) for part in parts]

    def flag_type(self):
        return f"comma-separated list of {self.item_type.__name__}"


class ListSerializer(flags.ArgumentSerializer):
    def serialize(self, value):
        return ",".join(grid_lib.format_value(v) for v in value)


def define_axis(name: str, default, help_text: str) -> None:
    """A flag that takes one value or a comma-separated list (a grid axis)."""
    item_type = type(default)
    flags.DEFINE_flag(flags.Flag(ListParser(item_type), ListSerializer(), name, [default],
                                 help_text + " A comma-separated list makes a grid.",
                                 boolean=item_type is bool))


define_axis("dataset", "digits", f"Dataset: {', '.join(DATASETS)}. digits is bundled "
            "(offline); cifar10 and stl10 come from TFDS.")
flags.DEFINE_string("data_dir", "", "Directory of prepared TFDS data (default: TFDS's own).")
define_axis("image_size", 0, "Image side in pixels, a multiple of 8, 8..512; 0 = the "
            "dataset's default (digits 32, cifar10 32, stl10 48).")
define_axis("g_loss", "nonsat", f"Generator loss: {', '.join(G_LOSS_NAMES)}. minimax is the "
            "saturating min log(1 - D(G(z))); nonsat is max log D(G(z)).")
define_axis("d_loss", "", f"Discriminator loss: {', '.join(D_LOSS_NAMES)}; empty = the "
            "generator loss's partner (bce for minimax and nonsat).")
define_axis("gp_weight", 10.0, "WGAN-GP gradient penalty weight lambda, 0..1e6.")
define_axis("spectral_norm", False, "Spectral normalisation (Miyato et al. 2018) on every "
            "layer of D.")
define_axis("width", 0, "Network width w in channels (D goes w..8w, G 8w..w), 1..1024; "
            "0 = default (64, or 16 for digits).")
define_axis("latent_dim", 128, "Dimension of the noise z ~ N(0, I), 1..4096.")
define_axis("epochs", 0, "Passes over the training images, 1..100000; 0 = default "
            "(digits 60, cifar10 and stl10 300).")
define_axis("batch_size", 64, "Global batch in images per D update, 1..65536, split across "
            "replicas (must divide by their number).")
define_axis("lr_g", 2e-4, "Generator Adam learning rate, in (0, 1].")
define_axis("lr_d", 2e-4, "Discriminator Adam learning rate, in (0, 1].")
define_axis("beta1", 0.5, "Adam beta1 for both networks, in [0, 1).")
define_axis("beta2", 0.999, "Adam beta2 for both networks, in [0, 1).")
define_axis("d_steps", 1, "Discriminator updates per generator update, 1..100.")
define_axis("seed", 0, "Random seed for weights, data order and noise, 0..2^31-1.")
flags.DEFINE_integer("seeds", 0, "N: run seeds 0..N-1 (a grid; overrides --seed), 1..1000; 0 = "
                     "not set (--seed).")
flags.DEFINE_string("preset", "", f"Named settings, applied under any flag you set: "
                    f"{', '.join(f'{k} ({v})' for k, v in PRESETS.items())}.")
flags.DEFINE_integer("search", 0, "Random search: draw N settings of "
                     f"{', '.join(search_lib.SEARCHED_FIELDS)} ({search_lib.describe_space()})"
                     " and train each loss with each, 0..1000; 0 = no search.")
flags.DEFINE_integer("search_seed", 0, "Seed of the search's draws, 0..2^31-1.")
flags.DEFINE_string("tuned_from", "", "A folder holding a random search (--search): train "
                    "each loss at its best setting there (the highest median final score "
                    "over its seeds; failed runs count worst), with seeds the search did "
                    "not use, so that the comparison is free of the winner's curse (Lucic "
                    "et al. 2018). Give the seeds, e.g. --seed=100,101,102,103,104.")
flags.DEFINE_string("strategy", "auto", f"Distribution: {', '.join(STRATEGIES)}. auto = tpu "
                    "if --tpu or TPU_NAME is set, mirrored on 2+ GPUs, else default.")
flags.DEFINE_string("tpu", "", "TPU name or grpc:// address, or 'local' on a TPU VM.")
flags.DEFINE_integer("steps_per_execution", 1, "Training steps per tf.function call, 1..10000.")
define_axis("eval_every", -1, "Epochs between evaluations (score, FID, KID, precision and "
            "recall), 0..100000; 0 = never; -1 = the dataset's default (digits 3, cifar10 8, "
            "stl10 2: evaluation under 10% of training compute). The last epoch is always "
            "evaluated when evaluation is on.")
define_axis("eval_samples", 0, "Generated images per evaluation, 10..1000000; 0 = default (digits "
            "2000, else 10000). The score uses all; the distances compare the first R with "
            "R real images, R = this or half the training images if fewer.")
flags.DEFINE_string("inception_model", INCEPTION_URL, "Inception for the metrics: the TF-Hub "
                    "URL, a local directory holding that SavedModel, or 'none'. Digits use "
                    "their own small classifier instead.")
flags.DEFINE_string("cache_dir", "", "Cache of the digits classifier and real-image "
                    "features; default $TFGAN_EXP_CACHE or ~/.cache/tfgan_exp.")
define_axis("mixed_precision", "", "Mixed precision: bf16, fp16 (with dynamic loss scaling "
            "for both optimizers), or empty for float32. D's logits, the losses and "
            "spectral normalisation stay float32.")
flags.DEFINE_boolean("jit_compile", False, "XLA-compile the training step.")
flags.DEFINE_string("run_dir", "", "Output directory; running again resumes it. Default: "
                    "runs/<dataset>-<g_loss>-seed<seed> for one run, runs/grid for a grid "
                    "(each run in a folder named by the settings that vary).")
flags.DEFINE_integer("keep_checkpoints", 3, "How many of the newest checkpoints to keep, 1..1000.")
flags.DEFINE_boolean("overwrite", False, "Delete an existing --run_dir and start again; "
                     "once per TFGAN_EXP_INVOCATION token when it is set (a requeued or "
                     "retried job with the same token resumes instead).")
flags.DEFINE_boolean("retry_diverged", False, "Train runs that diverged before again, from "
                     "their last good checkpoint (by default a grid skips them).")
flags.DEFINE_integer("checkpoint_every_steps", 0, "Also checkpoint within epochs, every N "
                     "global steps (0 = only at epoch ends), 0..10^9.")
flags.DEFINE_boolean("deterministic", False, "Deterministic ops (tf enable_op_determinism): "
                     "a killed and resumed run equals the uninterrupted one, bit for bit. "
                     "Slower on GPU.")
flags.DEFINE_string("shard", "", "Train only slice K of N of the grid (K/N, 0 <= K < N), so "
                    "that N jobs share one --run_dir. auto: K is the job array's task ID "
                    "(Slurm's SLURM_ARRAY_TASK_ID, a Kubernetes Indexed Job's "
                    "JOB_COMPLETION_INDEX) and N is TFGAN_EXP_SHARDS, else the number of "
                    "runs (one per task); auto/N: N given. A task past the last shard "
                    "has nothing to train and exits 0.")
flags.DEFINE_integer("parallel", 1, "Train up to P runs of the grid at once, each in its own "
                     "process on its own GPU (or its share of the CPU cores), 1..256.")
flags.DEFINE_boolean("process_per_run", False, "With --parallel: start a fresh process for "
                     "every run instead of keeping P processes that each train run after "
                     "run (slower: every run pays the process start, imports and "
                     "TensorFlow's start-up; isolates runs from each other's leaks).")
flags.DEFINE_boolean("dry_run", False, "Check the runs' settings and folders and print "
                     "what this command (this --shard) would do with each: would train, "
                     "would overwrite (--overwrite: delete the run there, then train), "
                     "finished, diverged (skipped) or held by another process; then stop: "
                     "nothing is trained or written, and data and models are not loaded.")
flags.DEFINE_boolean("slot", False, "Internal (used by --parallel): train the runs whose "
                     "JSON Configs come on stdin, one per line, one after another.")


def _seeds() -> List[int]:
    if F.seeds:
        if not 1 <= F.seeds <= 1000:
            raise UsageError(f"--seeds={F.seeds}: must be an integer from 1 to 1000")
        return list(range(F.seeds))
    return F.seed


def grid_from_flags() -> grid_lib.Grid:
    """The runs the flags ask for: one, or every combination of the listed settings.

    A preset's values apply to every flag the user did not set.
    """
    names = [f.name for f in dataclasses.fields(Config) if f.name != "run_dir"]
    values = {name: F[name].value if isinstance(F[name].value, list) else [F[name].value]
              for name in names}
    if F.preset:
        if F.preset not in PRESETS:
            raise UsageError(f"--preset={F.preset}: unknown; choose one of "
                             f"{', '.join(PRESETS)}")
        values.update({k: [v] for k, v in PRESETS[F.preset].items() if not F[k].present})
    values["seed"] = _seeds()
    if not 0 <= F.search <= 1000:
        raise UsageError(f"--search={F.search}: must be an integer from 0 to 1000")
    if F.search:
        # The draws set these for every run: a value given too would be silently lost.
        given = [f"--{n}" for n in search_lib.SEARCHED_FIELDS if F[n].present]
        given += [f"--preset={F.preset} (it sets {', '.join(sorted(PRESETS[F.preset]))})"
                  ] if F.preset and set(PRESETS[F.preset]) & set(search_lib.SEARCHED_FIELDS) else []
        if given:
            raise UsageError(f"--search={F.search} draws "
                             f"{', '.join(search_lib.SEARCHED_FIELDS)} for every run; do not "
                             f"also give {', '.join(given)}")
    if not 0 <= F.search_seed < 2**31:
        raise UsageError(f"--search_seed={F.search_seed}: must be an integer 0..2^31-1")
    tuned = _tuned_settings(values["seed"]) if F.tuned_from else None
    grid = grid_lib.expand(values, F.run_dir, F.search, F.search_seed,
                           force_grid=bool(F.seeds), tuned=tuned)
    if F.seeds and F["seed"].present:  # documented, but a seed dropped silently misleads
        grid.notes.append(f"--seeds={F.seeds} overrides --seed="
                          f"{','.join(map(str, F.seed))}: seeds 0..{F.seeds - 1} train")
    return grid


def _tuned_settings(seeds: List[int]):
    """--tuned_from: each loss's best search setting; refuses what would spoil it."""
    from tfgan_exp.report import analysis  # reads the search's runs: only for --tuned_from
    if not F.run_dir:
        raise UsageError("--tuned_from needs a --run_dir of its own for the re-run")
    if F.search:
        raise UsageError("--tuned_from re-runs a finished search: do not give --search too")
    given = [f"--{n}" for n in search_lib.SEARCHED_FIELDS if F[n].present]
    given += [f"--preset={F.preset}"] if F.preset and set(PRESETS[F.preset]) & set(
        search_lib.SEARCHED_FIELDS) else []
    if given:
        raise UsageError(f"--tuned_from sets {', '.join(search_lib.SEARCHED_FIELDS)} from the "
                         f"search; do not also give {', '.join(given)}")
    if not os.path.isdir(F.tuned_from):
        raise UsageError(f"--tuned_from={F.tuned_from}: not a directory")
    used = sorted(analysis.search_seeds(F.tuned_from) & set(seeds))
    if used:
        raise UsageError(f"--tuned_from: seed(s) {', '.join(map(str, used))} trained the "
                         "search's settings, whose best was picked on them (the winner's "
                         "curse); give seeds the search did not use, e.g. "
                         "--seed=100,101,102,103,104")
    if os.path.abspath(F.run_dir).startswith(os.path.abspath(F.tuned_from) + os.sep):
        raise UsageError(f"--run_dir={F.run_dir} is inside --tuned_from={F.tuned_from}: "
                         "keep the re-run's runs apart from the search's")
    chosen, notes = analysis.best_settings(F.tuned_from)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return chosen


def run_status(config: Config, child: bool = False) -> int:
    """Trains one run; returns its exit status: 0 trained, 1 crashed (recorded in its
    folder's failed.json), 2 a user's mistake or a folder another process is training, 3
    diverged. ``child``: started by ``--parallel``, which reads a held folder as status 4
    (``launch.EXIT_HELD``). A stop signal raises ``stopping.Interrupted`` (128 + N); a
    lease taken over ends the process with 75 (``lease.EXIT_LOST``: it stopped at once,
    writing nothing more)."""
    from tfgan_exp.grids import launch
    from tfgan_exp.runtime import lease
    try:
        from tfgan_exp.training import trainer  # imports TensorFlow: after the flags are checked
        trainer.run(config)
        return 0
    except lease.Held as error:
        if child:
            print(f"note: {error}", file=sys.stderr, flush=True)
            return launch.EXIT_HELD
        print_error(error)
        return 2
    except UsageError as error:
        print_error(error)
        return 2
    except TrainingDiverged as error:
        print_error(error)
        return launch.EXIT_DIVERGED
    except stopping.Interrupted:
        raise  # main says so and exits 128 + N
    except Exception as error:  # a crash: recorded where a grid's report will look
        launch.record_crash(config, error)
        return 1


def run_single(config: Config, child: bool = False) -> None:
    """One run as a command: exits with ``run_status``'s status."""
    status = run_status(config, child)
    if status == 0:
        stopping.done()
    else:
        sys.exit(status)


def run_slot() -> None:
    """A slot of a --parallel grid (``slots``): trains the Configs its launcher sends."""
    from tfgan_exp.grids import launch, slots
    launch.set_up_child()
    from tfgan_exp.training import trainer  # noqa: F401  (TensorFlow, once for every run here)
    try:
        slots.serve(lambda config: run_status(config, child=True))
    except stopping.Interrupted as error:
        print(f"stopped: {error}", file=sys.stderr)
        slots.exit_now(128 + error.signum)
    slots.exit_now()


def _dry_run(configs: List[Config], retry_diverged: bool) -> None:
    """Prints what the command would do with each run, and a count of each kind."""
    from tfgan_exp.grids import launch, preflight
    defaults = Config().resolved()
    counts = {"train": 0, "overwrite": 0, "finished": 0, "diverged": 0, "held": 0}
    for config in configs:
        kind, detail = launch.plan(config, retry_diverged)
        counts[kind] += 1
        if kind in ("train", "overwrite"):
            changed = [f"{f.name}={grid_lib.format_value(getattr(config, f.name))}"
                       for f in dataclasses.fields(Config) if f.name != "run_dir"
                       and getattr(config, f.name) != getattr(defaults, f.name)]
            print(f"would {kind} {config.run_dir}  ({', '.join(changed) or 'defaults'})")
        elif kind == "finished":
            print(f"finished {config.run_dir}")
        elif kind == "diverged":
            print(f"diverged (skipped) {config.run_dir}")
        else:
            print(f"held by another process {config.run_dir}  ({detail})")
    problems = preflight.folder_problems(
        [c for c in configs if launch.plan(c, retry_diverged)[0] in ("train", "overwrite")])
    if problems:
        raise UsageError("\n".join(problems))
    overwriting = (f" ({counts['overwrite']} deleting the run there first)"
                   if counts["overwrite"] else "")
    print(f"dry run: {counts['train'] + counts['overwrite']} would train{overwriting}, "
          f"{counts['finished']} finished, "
          f"{counts['diverged']} diverged (skipped), {counts['held']} held by another "
          "process; data and models are checked when it runs; nothing was trained or "
          "written", file=sys.stderr)


def main(argv):
    stopping.install()  # first: a SIGTERM from here on stops the process cleanly
    try:
        _main(argv)
    except stopping.Interrupted as error:
        print(f"stopped: {error}", file=sys.stderr)
        sys.exit(128 + error.signum)  # the shell's convention for "killed by a signal"


def _main(argv):
    from absl import logging
    logging.set_verbosity(logging.WARNING)  # hide TensorFlow's per-checkpoint INFO lines
    if len(argv) > 1:
        fail(f"unexpected argument(s) {argv[1:]}; every setting is a --flag (see --help)")
    if F.slot:
        run_slot()
        return
    from tfgan_exp.grids import launch
    try:
        grid = grid_from_flags()
        if not 1 <= F.parallel <= 256:
            raise UsageError(f"--parallel={F.parallel}: must be an integer from 1 to 256")
        if F.parallel > 1 and F.strategy in ("multiworker", "tpu"):
            raise UsageError(f"--parallel={F.parallel} with --strategy={F.strategy}: each "
                             "run of a cluster spans every worker, so runs cannot share "
                             "the machine; use --parallel=1 (or --shard across jobs)")
        shard = grid_lib.parse_shard(F.shard, runs=len(grid.configs))
        if shard and not grid.is_grid and not F.shard.startswith("auto"):
            raise UsageError(f"--shard={F.shard}: there is only one run; --shard splits a grid")
        announce(grid)
        from tfgan_exp.grids import launch  # reads run folders: after announce adopts them
        outside = grid_lib.runs_outside_the_array(F.shard, grid,
                                                  trained=launch.already_trained)
        if outside:
            print(outside, file=sys.stderr)
    except UsageError as error:
        fail(str(error))
    configs = grid.configs
    if shard:
        configs = grid_lib.shard(configs, *shard)
        print(f"shard {shard[0]}/{shard[1]}: {len(configs)} of the grid's "
              f"{len(grid.configs)} runs", file=sys.stderr)
        if not configs:
            print(f"shard {shard[0]}/{shard[1]}: this task's index has no runs (the grid "
                  f"has {len(grid.configs)} in {shard[1]} shard(s)); nothing to train",
                  file=sys.stderr)
            return
    if F.dry_run:
        try:
            _dry_run(configs, F.retry_diverged)
        except UsageError as error:
            fail(str(error))
        return
    if not grid.is_grid:
        run_single(configs[0])
        return
    try:
        get_ready(grid, configs)
    except UsageError as error:
        fail(str(error))
    try:
        trace = trace_path(grid.root, shard)
        if F.parallel > 1:
            tally = launch.run_in_parallel(configs, grid.root, F.parallel, trace,
                                           F.process_per_run, STARTED)
        else:
            tally = launch.run_sequentially(configs, grid.root, trace, STARTED)
    except UsageError as error:
        fail(str(error))
    # The grid's work is done: a signal from here on is only recorded, so that a grid
    # ending after its last run is not turned into a stopped one (exit 143).
    stopping.done()
    print(tally.summary(), file=sys.stderr)
    sys.exit(tally.exit_status)


def announce(grid: grid_lib.Grid) -> None:
    """Adopts runs already in the grid's folders, checks every run's folder against its
    settings (UsageError) and prints the notes, before anything is trained."""
    notes = grid.notes + grid_lib.adopt_existing(grid)
    for note in notes + grid_lib.check(grid, F.retry_diverged):  # every run, first
        print(f"note: {note}", file=sys.stderr)


def get_ready(grid: grid_lib.Grid, configs: List[Config], tuned_from: Optional[str] = None,
              retry_diverged: Optional[bool] = None) -> None:
    """Before the first of ``configs`` trains: checks that every run that will train
    can start (``preflight``: UsageError), and records the grid's search or the search
    a tuned re-run took its settings from (``tuned_from``; default: the flags')."""
    from tfgan_exp.grids import launch, preflight
    retry = F.retry_diverged if retry_diverged is None else retry_diverged
    preflight.check([c for c in configs if launch.plan(c, retry)[0]
                     not in ("finished", "diverged")])
    grid_lib.write_search(grid)
    grid_lib.write_tuned(grid, F.tuned_from if tuned_from is None else tuned_from)


def trace_path(root: str, shard) -> str:
    """Where a grid's timeline goes: timeline.json in its root, one per shard."""
    name = f"timeline-shard{shard[0]}of{shard[1]}.json" if shard else "timeline.json"
    return os.path.join(root, name)


def run():
    run_command(main)


if __name__ == "__main__":
    run()
