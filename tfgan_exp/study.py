"""A study: several grids (phases) trained as one queue, ``python -m tfgan_exp.study``.

    python -m tfgan_exp.study --run_dir=runs/digits-study --parallel=2 \\
      --phase="losses: --g_loss=minimax,nonsat,hinge --seeds=5 --epochs=30" \\
      --phase="search: --g_loss=minimax,nonsat,hinge --search=7 --epochs=10" \\
      --phase="tuned: --g_loss=minimax,nonsat,hinge --seed=100,101,102,103,104 \\
               --epochs=10 --tuned_from=search"

Each ``--phase`` is ``NAME: FLAGS``: a grid of ``run.py``'s training flags, trained into
``<run_dir>/NAME``. Training flags given outside the phases apply to every phase, over
the phase's own (``make study ARGS=--epochs=2`` shortens every phase). All phases' runs go into one queue of ``--parallel`` slots, the
costliest first (runs that another phase waits for before all others), so that no
slot idles at the end of one grid while another waits.
A phase whose ``--tuned_from`` names another phase joins the queue once every run of
that phase has ended (its settings are chosen from them); if one of those failed or
was held by another process, it is not started and the study exits 1.

Like a grid it resumes (run it again), stops on SIGTERM with every run checkpointed,
writes ``<run_dir>/timeline.json`` and ends with the timeline's and the runs' summary
lines. Exit statuses as ``run.py``'s for a grid.
"""
import os
import shlex
import sys
from typing import Dict, List, Optional

from absl import flags

from tfgan_exp import cli
from tfgan_exp.runtime import stopping
from tfgan_exp.command_line import fail, print_error, run_command
from tfgan_exp.config import Config, UsageError

F = flags.FLAGS
flags.DEFINE_multi_string("phase", [], "A phase of the study: 'NAME: FLAGS', FLAGS being "
                          "run.py's training flags for a grid trained into "
                          "<run_dir>/NAME; --tuned_from=OTHER waits for phase OTHER.")

# Flags of the study as a whole, never of one phase.
STUDY_FLAGS = ("run_dir", "parallel", "process_per_run", "dry_run", "shard", "slot",
               "phase")


class Phase:
    """One named grid of the study; ``after`` is the phase it waits for, if any."""

    def __init__(self, text: str, root: str, names: List[str]):
        name, colon, rest = text.partition(":")
        self.name = name.strip()
        if not colon or not self.name or not self.name.replace("-", "").replace(
                "_", "").isalnum():
            raise UsageError(f"--phase={text!r}: write it as 'NAME: FLAGS' with a NAME of "
                             "letters, digits, - and _ (its folder under --run_dir)")
        if self.name in names:
            raise UsageError(f"--phase: two phases are named {self.name!r}")
        try:
            self.args = _joined(shlex.split(rest))
        except ValueError as error:
            raise UsageError(f"--phase={text!r}: {error}") from None
        for arg in self.args:
            flag = arg.lstrip("-").split("=")[0]
            if not arg.startswith("--") or flag in STUDY_FLAGS or flag.startswith("no") and \
                    flag[2:] in STUDY_FLAGS:
                raise UsageError(f"--phase {self.name}: {arg!r} is not a training flag of "
                                 "a phase (the study's --run_dir, --parallel, --dry_run "
                                 "and --process_per_run are given once, outside)")
        self.run_dir = os.path.join(root, self.name)
        self.after: Optional[str] = None
        for index, arg in enumerate(self.args):
            if arg.startswith("--tuned_from="):
                source = arg.split("=", 1)[1]
                # Another phase, by its name or its folder: its runs, once it has ended.
                named = [n for n in names if source == n or os.path.abspath(source)
                         == os.path.abspath(os.path.join(root, n))]
                if named:
                    self.after = named[0]
                    self.args[index] = f"--tuned_from={os.path.join(root, named[0])}"
                elif source == self.name:
                    raise UsageError(f"--phase {self.name}: --tuned_from names itself")
        self.configs: Optional[List[Config]] = None  # once expanded
        self.grid = None
        self.tuned_from, self.retry_diverged = "", False


def _joined(args: List[str]) -> List[str]:
    """``--flag value`` as ``--flag=value`` for the flags that take a value."""
    joined: List[str] = []
    for arg in args:
        name = arg[2:] if arg.startswith("--") and "=" not in arg else ""
        if joined and joined[-1].endswith("=") and not arg.startswith("--"):
            joined[-1] += arg
        elif name in F and not F[name].boolean:
            joined.append(f"--{name}=")
        else:
            joined.append(arg)
    return joined


def training_flag_names() -> List[str]:
    """run.py's flags that a phase may set."""
    return [flag.name for flag in F.flags_by_module_dict().get(cli.__name__, [])
            if flag.name not in STUDY_FLAGS]


def expand(phase: Phase, common: List[str], names: List[str]) -> None:
    """Sets the phase's runs (``phase.configs``, ``phase.grid``): the training flags set
    to the study's common ones and the phase's own, checked as run.py checks a grid (its
    notes printed). Writes nothing (``get_ready`` does)."""
    for name in names:
        F[name].unparse()
    try:
        F(["study"] + phase.args + common)  # the study's own flags last: they win
        F.run_dir = phase.run_dir  # a phase of one run trains in the phase's folder itself
        if F.strategy in ("multiworker", "tpu"):
            raise UsageError(f"--strategy={F.strategy}: each run of a cluster spans every "
                             "worker, so a study's slots cannot share the machine; run "
                             "the phases with run.py (--shard across jobs)")
        phase.grid = cli.grid_from_flags()
        cli.announce(phase.grid)
    except (flags.Error, UsageError) as error:
        raise UsageError(f"--phase {phase.name}: {error}") from None
    phase.tuned_from, phase.retry_diverged = F.tuned_from, F.retry_diverged
    phase.configs = phase.grid.configs


def get_ready(phase: Phase) -> List[Config]:
    """Checks that the phase's runs can start and records its search (``cli.get_ready``);
    returns its runs."""
    try:
        cli.get_ready(phase.grid, phase.configs, phase.tuned_from, phase.retry_diverged)
    except UsageError as error:
        raise UsageError(f"--phase {phase.name}: {error}") from None
    return phase.configs


def main(argv):
    stopping.install()
    try:
        _main(argv)
    except stopping.Interrupted as error:
        print(f"stopped: {error}", file=sys.stderr)
        sys.exit(128 + error.signum)


def _main(argv):
    from absl import logging
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        fail(f"unexpected argument(s) {argv[1:]}; every setting is a --flag (see --help)")
    names = training_flag_names()
    common = [F[n].serialize() for n in names if F[n].present]
    root = F.run_dir  # each phase's expansion sets --run_dir to its own folder
    try:
        if not root:
            raise UsageError("--run_dir: give the study's folder (each phase trains in "
                             "a folder of its own there)")
        if not F.phase:
            raise UsageError("--phase: give at least one 'NAME: FLAGS'")
        if not 1 <= F.parallel <= 256:
            raise UsageError(f"--parallel={F.parallel}: must be an integer from 1 to 256")
        if F.shard:
            raise UsageError("--shard: a study runs as one queue on one machine; shard "
                             "each phase with run.py instead")
        phases: List[Phase] = []
        for text in F.phase:
            phases.append(Phase(text, root, [p.name for p in phases]))
        for phase in phases:  # a --tuned_from naming a later phase was read as a path
            later = [a for a in phase.args if a.startswith("--tuned_from=")
                     and a.split("=", 1)[1] in [p.name for p in phases]]
            if later:
                raise UsageError(f"--phase {phase.name}: {later[0]} names a phase that "
                                 "comes after it; list the phase it waits for first")
        for phase in phases:
            if phase.after is None or _ended(phases, phase.after, None):
                expand(phase, common, names)
        configs: List[Config] = []
        if not F.dry_run:  # every phase that can start checked, before one is written
            for phase in phases:
                configs += get_ready(phase) if phase.configs is not None else []
    except UsageError as error:
        fail(str(error))
    from tfgan_exp.grids import launch
    if F.dry_run:
        for phase in phases:
            print(f"phase {phase.name}:")
            if phase.configs is None:
                print(f"  its runs are chosen once phase {phase.after} has ended")
            else:
                try:
                    cli._dry_run(phase.configs, phase.retry_diverged)
                except UsageError as error:
                    fail(str(error))
        return
    blocked: List[str] = []

    def more(ended: Dict[str, str]) -> List[Config]:
        """The runs of the phases whose phase has now ended."""
        new: List[Config] = []
        for phase in phases:
            if phase.configs is not None or phase.name in blocked:
                continue
            outcome = _ended(phases, phase.after, ended)
            if outcome is None:
                continue
            if not outcome:
                blocked.append(phase.name)
                print(f"study: phase {phase.name} not started: a run of phase "
                      f"{phase.after} failed or was held by another process (see the "
                      "grid line); run the study again once it can train",
                      file=sys.stderr, flush=True)
                continue
            try:
                expand(phase, common, names)
                new += get_ready(phase)
            except Exception as error:  # this phase cannot start; the others go on
                blocked.append(phase.name)
                phase.configs = None
                print_error(error)
        return new

    def pending() -> bool:
        """Whether a phase may still join the queue."""
        return any(p.configs is None and p.name not in blocked for p in phases)

    def waited_for(config: Config) -> bool:
        """Whether a phase that has not joined yet waits for this run's phase."""
        return any(p.configs is None and p.name not in blocked and p.after and any(
            config.run_dir == c.run_dir for c in next(
                q for q in phases if q.name == p.after).configs or [])
            for p in phases)

    trace = os.path.join(root, "timeline.json")
    os.makedirs(root, exist_ok=True)
    tally = launch.run_in_parallel(configs, root, F.parallel, trace, F.process_per_run,
                                   cli.STARTED, more, pending, waited_for)
    stopping.done()
    waiting = [p.name for p in phases if p.configs is None and p.name not in blocked]
    if waiting and tally.signal is None:
        blocked += waiting
    print(tally.summary() + (f"; phase(s) not started: {', '.join(blocked)}"
                             if blocked else ""), file=sys.stderr)
    sys.exit(tally.exit_status or (1 if blocked else 0))


def _ended(phases: List[Phase], name: str, ended: Optional[Dict[str, str]]
           ) -> Optional[bool]:
    """Whether phase ``name`` has ended: True (every run finished or diverged), False
    (every run ended, one failed or was held), None (not yet; or not expanded yet).
    ``ended``: how the runs that have ended did (the launcher's record, which a run in
    training is not in even once its folder looks finished); None before the queue
    starts, when the folders say it (a resumed study)."""
    from tfgan_exp.grids import launch
    phase = next(p for p in phases if p.name == name)
    if phase.configs is None:
        return None
    outcomes = []
    for config in phase.configs:
        outcome = None if ended is None else ended.get(config.run_dir)
        if ended is None:
            kind = launch.plan(config, phase.retry_diverged)[0]
            outcome = kind if kind in ("finished", "diverged") else None
        if outcome is None:
            return None
        outcomes.append(outcome)
    return all(o in ("finished", "diverged") for o in outcomes)


if __name__ == "__main__":
    run_command(main)
