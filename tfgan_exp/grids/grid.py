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
import collections
import dataclasses
import itertools
import json
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from tfgan_exp.runtime import lease as lease_lib, scheduler
from tfgan_exp.grids import search as search_lib
from tfgan_exp.config import NON_RESULT_SETTINGS, Config, UsageError, run_identity
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
        # Six digits read well and name every practical value; two values that differ
        # only past them (2e-4 and 2.0000001e-4) would share a name, so those get all.
        text = f"{value:g}"
        return text if float(text) == value else repr(value)
    return str(value)


def run_name(settings: Dict[str, object], varying: Sequence[str]) -> str:
    """``key=value`` for each varying setting, joined by commas: the run's folder name."""
    return ",".join(f"{key}={format_value(settings[key])}" for key in varying)


@dataclasses.dataclass
class Grid:
    """The runs of one command, in the order they train, and what the report needs.

    ``search`` holds the drawn settings when the grid is a random search, ``tuned`` the
    settings a tuned re-run took from a search (else None); ``notes`` say what the
    expansion did that the user may not expect (values that made the same run).
    """
    root: str
    configs: List[Config]
    search: Optional[dict] = None
    tuned: Optional[dict] = None
    notes: List[str] = dataclasses.field(default_factory=list)
    forced: bool = False  # a grid even of one run (--seeds=1)

    @property
    def is_grid(self) -> bool:
        return (len(self.configs) > 1 or self.search is not None
                or self.tuned is not None or self.forced)


def expand(values: Dict[str, List], root: str = "", search_count: int = 0,
           search_seed: int = 0, force_grid: bool = False,
           tuned: Optional[Dict[tuple, dict]] = None) -> Grid:
    """Every combination of ``values`` (setting name -> list of values), each run once.

    Settings not in ``values`` keep Config's defaults. With ``search_count`` > 0 each
    combination is crossed with that many drawn settings (``search.draw_settings``).
    With ``tuned`` (``analysis.best_settings``: search.tuned_key -> the searched
    settings), each run takes its loss's best search setting. Values that resolve to
    the same run (``nonsat,nonsat``, ``2e-4,0.0002``, ``--width=0,16`` on digits) make
    it once, with a note. Seeds vary slowest, so that a grid stopped early has every
    loss at the first seeds. Folders are named by the given values that vary. A
    single run (no list longer than one, no search, not ``force_grid``) goes to
    ``root`` itself, or to Config's default folder when ``root`` is empty.

    Raises:
      UsageError: a setting that is not an axis was given several values, a searched
        setting was also listed, or a tuned run's setting is not in the search.
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
    seeds = values.get("seed", [Config.seed])
    # identity -> (config, trial, the values given): the first of equal runs is kept
    runs: Dict[tuple, Tuple[Config, Optional[int], Dict[str, object]]] = {}
    given = 0
    for seed, trial, combo in itertools.product(
            seeds, trials, itertools.product(*(values[name] for name in axes))):
        listed = dict(zip(axes, combo), seed=seed)  # the values the command gave
        drawn = {k: v for k, v in trial.items() if k != "trial"}
        config = Config(**dict(listed, **drawn)).resolved()
        if tuned is not None:
            config = _tuned(config, tuned)
        given += 1
        runs.setdefault(run_identity(dataclasses.asdict(config)),
                        (config, trial.get("trial"), listed))
    notes = []
    if len(runs) < given:
        notes.append(f"{given - len(runs)} of the {given} combinations listed resolve to a "
                     "run listed before (equal values, or a default given by its value); "
                     f"each run is trained once: {len(runs)} runs")
    # Named by the values given (they type back as flags; a d_loss that follows its
    # g_loss is not named) among the runs kept, so equal values never make two names.
    kept = [given_values for _, _, given_values in runs.values()]
    varying = [name for name in axes if len({format_value(v[name]) for v in kept}) > 1]
    varying = ([n for n in NAME_ORDER if n in varying]
               + [n for n in varying if n not in NAME_ORDER])
    if search:
        varying.append("trial")
    if len({v["seed"] for v in kept}) > 1 or force_grid or search or tuned is not None:
        varying.append("seed")
    is_grid = len(kept) > 1 or force_grid or bool(search) or tuned is not None
    grid_root = root or (DEFAULT_ROOT if is_grid else "")
    configs = []
    for config, trial, given_values in runs.values():
        named = dict(given_values, trial=trial)
        run_dir = os.path.join(grid_root, run_name(named, varying)) if is_grid else (
            grid_root or config.run_dir)
        configs.append(dataclasses.replace(config, run_dir=run_dir))
    tuned_record = None
    if tuned is not None:
        tuned_record = {"runs": [{k: getattr(c, k) for k in ("dataset", "g_loss", "d_loss",
                                                             *search_lib.SEARCHED_FIELDS)}
                                 for c in configs]}
    return Grid(grid_root, configs, search, tuned_record, notes, forced=force_grid)


def _tuned(config: Config, tuned: Dict[tuple, dict]) -> Config:
    """``config`` with its loss's best search setting (``tuned``); UsageError if the
    search has none for its loss and other settings."""
    key = search_lib.tuned_key(dataclasses.asdict(config))
    if key not in tuned:
        differing = ", ".join(f"{k}={format_value(v)}" for k, v in key
                              if k in ("dataset", "g_loss", "d_loss") or v != getattr(
                                  Config().resolved(), k, v))
        raise UsageError(f"--tuned_from: the search has no finished runs of {differing} "
                         "(a tuned re-run takes each loss's best setting among the search's "
                         "runs with the same other settings)")
    return dataclasses.replace(config, **tuned[key]).resolved()


def adopt_existing(grid: Grid) -> List[str]:
    """Points each run of ``grid`` at the folder under its root that already holds the
    same run (settings and seed), when that folder has another name: a grid widened by
    an axis, or a value written differently, continues those runs rather than training
    them again under a new name. A folder whose run differs only in its epochs or
    evaluation cadence (which a resume may change) is continued too, when it is the
    only run of the grid it could be. Returns a note per adopted folder."""
    if not grid.is_grid or not os.path.isdir(grid.root):
        return []
    exact, resumable = {}, {}
    for folder, _, files in sorted(os.walk(grid.root)):
        saved = _run_recorded_in(folder, files)
        if saved is not None:
            exact.setdefault(run_identity(saved), folder)
            resumable.setdefault(run_identity(saved, resumable=True), folder)
    claims = collections.Counter(run_identity(dataclasses.asdict(c), resumable=True)
                                 for c in grid.configs)
    notes = []
    for index, config in enumerate(grid.configs):
        if RunDir(config.run_dir).saved_config() is not None or lease_lib.holder(
                config.run_dir):
            continue  # its own folder holds a run (grid.check compares it) or is held
        settings = dataclasses.asdict(config)
        folder = exact.get(run_identity(settings))
        if folder is None and claims[run_identity(settings, resumable=True)] == 1:
            folder = resumable.get(run_identity(settings, resumable=True))
        if folder and os.path.normpath(folder) != os.path.normpath(config.run_dir):
            notes.append(f"{config.run_dir} is the run already in {folder} (same settings "
                         "and seed): it continues there")
            grid.configs[index] = dataclasses.replace(config, run_dir=folder)
    return notes


def twin_elsewhere(config: Config) -> Optional[str]:
    """The folder beside ``config.run_dir`` that holds the same run (settings and seed)
    when its own folder does not: another grid over this root, started after this one
    adopted its folders (``adopt_existing``), has begun the run under another name.
    Asked as each run of a grid starts, so that a grid running for hours does not train
    the run a second time. None when there is no such folder."""
    if (RunDir(config.run_dir).saved_config() is not None
            or lease_lib.holder(config.run_dir)):
        return None
    root, mine = os.path.dirname(config.run_dir), os.path.normpath(config.run_dir)
    identity = run_identity(dataclasses.asdict(config))
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        folder = os.path.join(root, name)
        if os.path.normpath(folder) == mine or not os.path.isdir(folder):
            continue
        saved = _run_recorded_in(folder, os.listdir(folder))
        if saved is not None and run_identity(saved) == identity:
            return folder
    return None


def _run_recorded_in(folder: str, files) -> Optional[dict]:
    """The settings of the run in ``folder`` (whose entries are ``files``): its
    config.json, else, for a run still starting elsewhere before its config.json, the
    run its live holder's lease record names; None for a folder that holds no run."""
    saved = RunDir(folder).saved_config() if "config.json" in files else None
    if saved is None and lease_lib.LEASE_FILE in files:
        saved = (lease_lib.holder(folder) or {}).get("run")
    return saved


def parse_shard(text: str, environ=None, runs: int = 0) -> Optional[Tuple[int, int]]:
    """``K/N`` -> (K, N), 0 <= K < N; ``auto`` or ``auto/N`` -> from the scheduler.

    ``auto`` takes K from the job array: the task ID itself (Slurm's
    SLURM_ARRAY_TASK_ID, or a Kubernetes Indexed Job's JOB_COMPLETION_INDEX; never
    ID - SLURM_ARRAY_TASK_MIN, so resubmitted subsets, stepped arrays and arrays that do
    not start at 0 train their own shards) and N from ``auto/N``, else from
    TFGAN_EXP_SHARDS (set by the job files), else it is ``runs``, the number of runs in
    the grid: one run per task. With ``auto``, K may be N or more: that task has no
    runs (``shard`` gives it none). Empty -> None.
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


def runs_outside_the_array(text: str, grid: Grid, environ=None,
                           trained: Callable[[Config], bool] = lambda config: False) -> str:
    """A warning when a Slurm array with ``--shard=auto`` leaves shards to no task: its
    task IDs (SLURM_ARRAY_TASK_MIN..SLURM_ARRAY_TASK_MAX) start after shard 0 (say
    ``--array=1-18``) or end before the last shard (N from ``auto/N`` or
    TFGAN_EXP_SHARDS, else one run per task; say ``--array=0-17`` after the grid grew to
    30 runs). Every task then ends with status 0 and those runs are never trained.
    Runs ``trained`` says are done are not named (a resubmitted subset of tasks, whose
    other runs an earlier array trained, is not warned of). '' when nothing is left out.
    """
    environ = os.environ if environ is None else environ
    first, last = scheduler.array_min(environ), scheduler.array_max(environ)
    if text.partition("/")[0] != "auto" or last is None:
        return ""
    runs = len(grid.configs)
    _, count = parse_shard(text, environ, runs)
    outside = [k for k in range(count) if k < (first or 0) or k > last]
    left_out = [c for k in outside for c in shard(grid.configs, k, count) if not trained(c)]
    if not left_out:
        return ""
    names = [os.path.relpath(c.run_dir, grid.root) if grid.root else c.run_dir
             for c in left_out]
    listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    unit = "shard" if count != runs else "run"
    spans = []
    for low, high in ((0, (first or 0) - 1), (last + 1, count - 1)):
        if low <= high:
            spans.append(f"{unit}s {low}-{high}" if high > low else f"{unit} {low}")
    span = " and ".join(spans) + (f" of {count}" if count != runs else "")
    if count != runs:
        advice = f"Submit --array=0-{count - 1}"
    else:
        advice = (f"Submit --array=0-{runs - 1}, or set {scheduler.SHARDS_VARIABLE}=N to "
                  "split the grid into N shards for --array=0-(N-1)")
    split = f"into {count} shards" if count != runs else "one run per task"
    ids = f"{first}-{last}" if first is not None else f"up to {last}"
    return (f"warning: this Slurm array's task IDs are {ids} (SLURM_ARRAY_TASK_MIN, _MAX; "
            f"task i trains shard i, from 0) but the grid ({runs} runs) is split {split}: "
            f"no task of this array trains {span}; not trained yet: {listed}. {advice}.")


def _integer(flag: str, part: str, whole: str) -> int:
    try:
        return int(part)
    except ValueError:
        raise UsageError(f"{flag}={whole}: {part!r} is not a whole number") from None


def shard(configs: List[Config], index: int, count: int) -> List[Config]:
    """The index-th of ``count`` disjoint slices: every count-th run from the index-th;
    none for an index of ``count`` or more (a task of an array larger than the shard
    count: runs from index on are another shard's).

    Round-robin rather than in blocks: seeds vary slowest in a grid, so a slice takes
    runs from every seed rather than all of the last seeds (when the count divides the
    number of losses, a slice may hold one loss only).
    """
    return configs[index::count] if index < count else []


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


TUNED_FILE = "tuned.json"


def write_tuned(grid: Grid, search_dir: str) -> None:
    """Writes ``<root>/tuned.json``: the search a tuned re-run took its settings from."""
    if grid.tuned is None:
        return
    os.makedirs(grid.root, exist_ok=True)
    write_atomically(os.path.join(grid.root, TUNED_FILE),
                     json.dumps(dict(grid.tuned, search=search_dir), indent=2) + "\n")


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
