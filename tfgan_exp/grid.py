"""A grid of runs: every combination of the listed settings, named by what varies.

``expand`` turns lists of setting values (from comma-separated flags) and an optional
random search into one ``Config`` per run. Each run of a grid goes to
``<root>/<name>``, where the name lists, Hydra-style, only the settings that vary
across the grid (``g_loss=minimax,lr_g=0.0001,seed=0``; a search trial is
``trial=3``). ``check`` then looks at every run before the first one trains: its
settings, and whether its folder holds a run with other settings. ``shard`` picks the
K-th of N disjoint slices, so that job-array tasks share one grid (``parse_shard`` says
which slice a task takes).

Nothing here imports TensorFlow: a grid is checked in a fraction of a second.
"""
import dataclasses
import itertools
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

from tfgan_exp import scheduler
from tfgan_exp import search as search_lib
from tfgan_exp.config import NON_RESULT_SETTINGS, Config, UsageError
from tfgan_exp.rundir import RunDir, check_writable, write_atomically

DEFAULT_ROOT = os.path.join("runs", "grid")
# Settings that may be grid axes: every one that changes what a run computes.
AXES = tuple(f.name for f in dataclasses.fields(Config) if f.name not in NON_RESULT_SETTINGS)
# Names come first for these, in this order; then the other axes in Config's order.
NAME_ORDER = ("dataset", "g_loss", "d_loss")
SEARCH_FILE = "search.json"


def format_value(value) -> str:
    """A setting's value as it reads in a folder name and types back as a flag."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def run_name(settings: Dict[str, object], varying: Sequence[str]) -> str:
    """``key=value`` for each varying setting, joined by commas: the run's folder name."""
    return ",".join(f"{key}={format_value(settings[key])}" for key in varying)


@dataclasses.dataclass
class Grid:
    """The runs of one command, in the order they train, and what the report needs.

    ``search`` holds the drawn settings when the grid is a random search (else None).
    """
    root: str
    configs: List[Config]
    search: Optional[dict] = None

    @property
    def is_grid(self) -> bool:
        return len(self.configs) > 1 or self.search is not None


def expand(values: Dict[str, List], root: str = "", search_count: int = 0,
           search_seed: int = 0, force_grid: bool = False) -> Grid:
    """Every combination of ``values`` (setting name -> list of values).

    Settings not in ``values`` keep Config's defaults. With ``search_count`` > 0 each
    combination is crossed with that many drawn settings (``search.draw_settings``).
    Seeds vary slowest, so that a grid stopped early has every loss at the first seeds.
    A single run (no list longer than one, no search, not ``force_grid``) goes to
    ``root`` itself, or to Config's default folder when ``root`` is empty.

    Raises:
      UsageError: a setting that is not an axis was given several values, or a searched
        setting was also listed.
    """
    for name, options in values.items():
        if len(options) > 1 and name not in AXES:
            raise UsageError(f"--{name} takes one value, not a list (it does not change "
                             "what a run computes, so it is not a grid axis)")
    trials: List[Dict[str, object]] = [{}]
    search = None
    if search_count:
        listed = [name for name in search_lib.SEARCHED_FIELDS if len(values.get(name, ())) > 1]
        if listed:
            raise UsageError(f"--search draws {', '.join(search_lib.SEARCHED_FIELDS)}; do not "
                             f"also list values of {', '.join(listed)}")
        drawn = search_lib.draw_settings(search_count, search_seed)
        trials = [dict(settings, trial=number) for number, settings in enumerate(drawn)]
        search = {"count": search_count, "seed": search_seed,
                  "space": search_lib.describe_space(), "trials": trials}
    axes = [name for name in values if name != "seed"]
    varying = [name for name in axes if len(values[name]) > 1]
    varying = ([n for n in NAME_ORDER if n in varying]
               + [n for n in varying if n not in NAME_ORDER])
    if search:
        varying.append("trial")
    seeds = values.get("seed", [Config.seed])
    if len(seeds) > 1 or force_grid or search:
        varying.append("seed")
    is_grid = len(varying) > 0 or force_grid
    grid_root = root or (DEFAULT_ROOT if is_grid else "")
    configs = []
    for seed, trial, combo in itertools.product(
            seeds, trials, itertools.product(*(values[name] for name in axes))):
        settings = dict(zip(axes, combo), seed=seed)
        settings.update({k: v for k, v in trial.items() if k != "trial"})
        named = dict(settings, trial=trial.get("trial"))
        if is_grid:
            run_dir = os.path.join(grid_root, run_name(named, varying))
        else:
            run_dir = grid_root
        configs.append(Config(**dict(settings, run_dir=run_dir)).resolved())
    return Grid(grid_root, configs, search)


def parse_shard(text: str, environ=None, runs: int = 0) -> Optional[Tuple[int, int]]:
    """``K/N`` -> (K, N), 0 <= K < N; ``auto`` or ``auto/N`` -> from the scheduler.

    ``auto`` takes K from the job array: the task ID itself (Slurm's
    SLURM_ARRAY_TASK_ID, or a Kubernetes Indexed Job's JOB_COMPLETION_INDEX; never
    ID - SLURM_ARRAY_TASK_MIN, so resubmitted subsets, stepped arrays and arrays that do
    not start at 0 train their own shards) and N from ``auto/N``, else from
    TFGAN_EXP_SHARDS (set by the job files), else it is ``runs``, the number of runs in
    the grid: one run per task. With ``auto``, K may be N or more: that task has no
    runs. Empty -> None.
    """
    if not text:
        return None
    head, _, count_text = text.partition("/")
    if head == "auto":
        index = scheduler.task_index(environ)
        if index is None:
            raise UsageError(f"--shard={text}: neither SLURM_ARRAY_TASK_ID (a Slurm job "
                             "array) nor JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) "
                             "is set; give --shard=K/N")
        if count_text:
            count = _integer("--shard", count_text, text)
        else:
            count = scheduler.shard_count(environ) or runs
        if count < 1:
            raise UsageError(f"--shard={text}: the number of shards must be at least 1 "
                             f"(got {count})")
        return index, count
    if not count_text:
        raise UsageError(f"--shard={text}: expected K/N (0 <= K < N), auto or auto/N")
    index, count = _integer("--shard", head, text), _integer("--shard", count_text, text)
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard={text}: the shard index must be 0..N-1 and N at least 1 "
                         f"(got index {index} of {count})")
    return index, count


def _integer(flag: str, part: str, whole: str) -> int:
    try:
        return int(part)
    except ValueError:
        raise UsageError(f"{flag}={whole}: {part!r} is not a whole number") from None


def shard(configs: List[Config], index: int, count: int) -> List[Config]:
    """The index-th of ``count`` disjoint slices: every count-th run from the index-th.

    Round-robin rather than in blocks: seeds vary slowest in a grid, so a slice takes
    runs from every seed rather than all of the last seeds (when the count divides the
    number of losses, a slice may hold one loss only).
    """
    return configs[index::count]


def check(grid: Grid, retry_diverged: bool = False) -> List[str]:
    """Checks every run of ``grid`` before any trains; returns notes for the user.

    Raises UsageError naming every run folder that holds a run with other settings (and
    how to proceed), or a root that cannot be written.
    """
    check_writable(grid.root or grid.configs[0].run_dir)
    clashes, notes = [], []
    for config in grid.configs:
        run_dir = RunDir(config.run_dir)
        if run_dir.will_overwrite(config, scheduler.invocation()):
            continue
        clash = run_dir.clash(config)
        if clash:
            clashes.append(clash)
        elif run_dir.divergence() and not retry_diverged:
            notes.append(f"{config.run_dir} diverged before; it is skipped "
                         "(--retry_diverged trains it again)")
    if clashes:
        shown = "\n  ".join(clashes[:10])
        more = f"\n  ... and {len(clashes) - 10} more" if len(clashes) > 10 else ""
        raise UsageError(f"{len(clashes)} run folder(s) of this grid hold runs with other "
                         f"settings; nothing was trained:\n  {shown}{more}\nUse another "
                         "--run_dir, or --overwrite to delete those runs and start them again.")
    if grid.search is not None:
        path = os.path.join(grid.root, SEARCH_FILE)
        if os.path.exists(path):
            with open(path) as f:
                saved_seed = json.load(f).get("seed")
            if saved_seed != grid.search["seed"]:
                raise UsageError(f"{grid.root} holds a search drawn with --search_seed="
                                 f"{saved_seed}; use another --run_dir for --search_seed="
                                 f"{grid.search['seed']}")
    return notes


def write_search(grid: Grid) -> None:
    """Writes ``<root>/search.json``: the space and the drawn settings, for the report."""
    if grid.search is None:
        return
    path = os.path.join(grid.root, SEARCH_FILE)
    if os.path.exists(path):  # a longer search extends a shorter one: keep the longest
        with open(path) as f:
            if json.load(f)["count"] >= grid.search["count"]:
                return
    os.makedirs(grid.root, exist_ok=True)
    write_atomically(path, json.dumps(grid.search, indent=2) + "\n")
