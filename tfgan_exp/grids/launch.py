"""Running the runs of a grid: one after another in this process, or P at once.

``run_sequentially`` trains each run in this process. ``run_in_parallel`` keeps P slot
processes (``slots``: ``python -m tfgan_exp.cli --slot``), each training run after run,
the costliest runs first: each slot is pinned to its own GPU where there are GPUs
(CUDA_VISIBLE_DEVICES) and to its share of the CPU cores (affinity and TensorFlow's
thread pools), its output lines are prefixed with its run's name, and a SIGTERM or
SIGINT to this process is passed to every slot, whose run saves a checkpoint and stops.
Either way a run already trained is counted without loading anything, a diverged run is
recorded in its folder, a run whose folder another process holds (``lease``) is skipped
with a note, a run that crashes or is killed (by a signal this launcher did not send:
the OOM killer's SIGKILL, SIGABRT) is recorded in its folder's failed.json, and the grid
goes on (a slot that died is replaced). A ``--parallel`` run whose lease another process
took over (its process exits ``lease.EXIT_LOST`` at once) counts as held by another
process, and nothing is written into its folder; in a sequential grid the whole process
exits so. Both record where the wall time went (``timeline``) and print its summary.

Exit status of a grid: 0 when every run finished or diverged (a divergence is a result),
1 when a run failed (crashed, was killed, or stopped with an error) or was held by
another process, 2 for a user's mistake found before training, 75 (``lease.EXIT_LOST``)
when a sequential grid's run was taken over, 128 + N when signal N stopped it.
"""
import dataclasses
import os
import queue as queue_lib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import Callable, Dict, List, Optional, Tuple

from tfgan_exp.runtime import lease as lease_lib
from tfgan_exp.runtime import scheduler, stopping, timeline
from tfgan_exp.grids import grid as grid_lib, slots as slots_lib
from tfgan_exp.config import Config, TrainingDiverged, UsageError
from tfgan_exp.rundir import RunDir

# Exit statuses of one run (``cli.run_status``): a slot reports them to the launcher. A
# run in a slot ends EXIT_HELD when another process holds its folder; run by a user, it
# exits 2 then, as for any reason it cannot start.
EXIT_DIVERGED, EXIT_HELD = 3, 4
LISTED = 5  # names listed in the summary line per kind; the rest are counted


@dataclasses.dataclass
class Tally:
    """How the runs of a grid ended, and which failed or were held."""
    total: int
    finished: int = 0
    diverged: int = 0
    signal: Optional[int] = None  # the signal that stopped the grid, if one did
    failed_runs: List[str] = dataclasses.field(default_factory=list)
    held_runs: List[str] = dataclasses.field(default_factory=list)
    broken: str = ""  # why the grid stopped giving out runs, when its processes could not run

    @property
    def failed(self) -> int:
        return len(self.failed_runs)

    @property
    def held(self) -> int:
        return len(self.held_runs)

    @property
    def not_run(self) -> int:
        return self.total - self.finished - self.diverged - self.failed - self.held

    def summary(self) -> str:
        parts = [f"{self.finished} finished", f"{self.diverged} diverged",
                 f"{self.failed} failed{_listed(self.failed_runs)}"]
        if self.held:
            parts.append(f"{self.held} held by another process{_listed(self.held_runs)}")
        if self.not_run:
            parts.append(f"{self.not_run} not finished")
        line = f"grid: {self.total} runs: {', '.join(parts)}"
        if self.signal is not None:
            line += f"; stopped by {signal.Signals(self.signal).name}, run it again to resume"
        if self.broken:
            line += f"; stopped: {self.broken}"
        return line

    @property
    def exit_status(self) -> int:
        if self.signal is not None:
            return 128 + self.signal
        return 1 if self.failed or self.held or self.broken else 0


def _listed(names: List[str]) -> str:
    if not names:
        return ""
    more = f" and {len(names) - LISTED} more" if len(names) > LISTED else ""
    return f" ({', '.join(names[:LISTED])}{more})"


def run_name(config: Config, root: str) -> str:
    """A run's name in output lines: its folder relative to the grid's root."""
    return os.path.relpath(config.run_dir, root) if root else config.run_dir


def run_sequentially(configs: List[Config], root: str, trace_path: Optional[str] = None,
                     started: Optional[float] = None) -> Tally:
    """Trains the runs one after another in this process.

    A run already trained is counted before anything is loaded for it. A divergence is
    counted; a run whose folder another process holds is skipped with a note; a run
    that crashes (any other exception: out of memory, an unreadable checkpoint, an I/O
    error, a problem found only once it starts) is recorded in its folder's failed.json;
    and the grid goes on to the next run. A stop signal (SIGTERM, SIGINT) stops the grid,
    the run under way saving a checkpoint. ``started``: when the command started (its
    start-up is the timeline's first span); ``trace_path``: where the timeline goes.
    """
    grid_start = time.time()
    tally = Tally(len(configs))
    row: List[timeline.Span] = []
    if started is not None:
        row.append({"name": "start-up", "cat": timeline.STARTUP, "start": started,
                    "end": grid_start, "args": {"pid": os.getpid()}})
    timeline.set_sink(row.append)
    try:
        with timeline.span("start-up: TensorFlow", timeline.STARTUP):
            from tfgan_exp.training import trainer  # imports TensorFlow: a signal may come meanwhile
        for number, config in enumerate(configs, start=1):
            name = run_name(config, root)
            stopping.check()  # a signal that came as the last run ended stops the grid here
            print(f"[grid {number}/{len(configs)}] {config.run_dir}", file=sys.stderr,
                  flush=True)
            if already_trained(config):
                print(f"{config.run_dir}: already trained for {config.epochs} epochs",
                      file=sys.stderr, flush=True)
                tally.finished += 1
                continue
            twin = grid_lib.twin_elsewhere(config)
            if twin:
                print(_twin_note(config, twin), file=sys.stderr, flush=True)
                tally.held_runs.append(name)
                continue
            try:
                with timeline.span(name, timeline.RUN):
                    trainer.run(config)
                tally.finished += 1
            except TrainingDiverged as error:
                print(f"diverged: {error}", file=sys.stderr, flush=True)
                tally.diverged += 1
            except lease_lib.Held as error:
                print(f"note: {config.run_dir} is held by another process "
                      f"({lease_lib.describe(error.holder)}); skipped", file=sys.stderr,
                      flush=True)
                tally.held_runs.append(name)
            except stopping.Interrupted:
                raise
            except Exception as error:  # a crash of this run: the others still train
                record_crash(config, error)
                tally.failed_runs.append(name)
    except stopping.Interrupted as error:
        tally.signal = error.signum
        print(f"stopped: {error}", file=sys.stderr, flush=True)
    finally:
        timeline.set_sink(None)
    _finish_timeline({0: row}, 1, min([grid_start] + [s["start"] for s in row]), trace_path)
    return tally


def _twin_note(config: Config, twin: str) -> str:
    return (f"note: {config.run_dir} is the run another grid has begun in {twin} since "
            "this one started (same settings and seed): left to it, and counted as held; "
            "run this command again once it has ended, to continue the run there")


def record_crash(config: Config, error: BaseException) -> None:
    """Says on stderr that the run crashed (with the traceback, unless it is a user's
    mistake) and records it in its folder's failed.json."""
    lines = traceback.format_exception(type(error), error, error.__traceback__)
    if not isinstance(error, UsageError):
        print("".join(lines).rstrip(), file=sys.stderr)
    message = str(error).strip()
    why = f"{type(error).__name__}: {message.splitlines()[0] if message else ''}"
    print(f"failed: {config.run_dir}: {why}", file=sys.stderr, flush=True)
    try:
        RunDir(config.run_dir).record_failure(
            why, error_type=type(error).__name__, message=message,
            traceback="".join(lines).rstrip().splitlines()[-10:])
    except OSError as write_error:
        print(f"warning: cannot record the failure in {config.run_dir}: {write_error}",
              file=sys.stderr, flush=True)


def visible_gpus(environ=None, proc_dir: str = "/proc/driver/nvidia/gpus",
                 dev_dir: str = "/dev") -> List[str]:
    """The NVIDIA GPUs a child process may be given, as CUDA_VISIBLE_DEVICES entries.

    CUDA_VISIBLE_DEVICES when it is set; else the indices ``nvidia-smi --query-gpu=index``
    prints (never line numbers of ``nvidia-smi -L``, whose MIG lines would shift them);
    else, without a working nvidia-smi, one index per GPU the driver lists in
    ``proc_dir`` (or per ``/dev/nvidiaN``), so that a missing tool does not give every
    child every GPU; else none. Children get CUDA_DEVICE_ORDER=PCI_BUS_ID, the order
    of nvidia-smi's indices. Found without importing TensorFlow, which would claim the
    GPUs' memory.
    """
    environ = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in environ:
        return [d.strip() for d in environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    tool = shutil.which("nvidia-smi", path=environ.get("PATH"))
    if tool:
        try:
            listing = subprocess.run([tool, "--query-gpu=index", "--format=csv,noheader"],
                                     capture_output=True, text=True, timeout=30)
            indices = [line.strip() for line in listing.stdout.splitlines()
                       if line.strip().isdigit()]
            if listing.returncode == 0 and indices:
                return indices
        except (OSError, subprocess.SubprocessError):
            pass
    count = len(_entries(proc_dir)) or len(
        [name for name in _entries(dev_dir) if re.fullmatch(r"nvidia\d+", name)])
    return [str(index) for index in range(count)]


def _entries(directory: str) -> List[str]:
    try:
        return os.listdir(directory)
    except OSError:
        return []


def slot_environment(slot: int, slots: int, cpus: List[int], gpus: List[str]) -> Dict:
    """What process ``slot`` of ``slots`` is given: its CPU cores, thread counts and GPU.

    Cores are split in contiguous blocks, one per slot (shared round-robin when there
    are more slots than cores); GPUs go round-robin over the slots.
    """
    if len(cpus) >= slots:
        share = cpus[slot * len(cpus) // slots:(slot + 1) * len(cpus) // slots]
    else:
        share = [cpus[slot % len(cpus)]]
    environ = {
        # TensorFlow sizes its thread pools from these, and oneDNN from OMP_NUM_THREADS;
        # the affinity then keeps the threads on the slot's cores.
        "TF_NUM_INTRAOP_THREADS": str(len(share)),
        "TF_NUM_INTEROP_THREADS": str(max(1, len(share) // 2)),
        "OMP_NUM_THREADS": str(len(share)),
    }
    if gpus:
        environ["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
        # nvidia-smi numbers GPUs by PCI bus; CUDA by default fastest first.
        environ.setdefault("CUDA_DEVICE_ORDER", os.environ.get("CUDA_DEVICE_ORDER",
                                                                "PCI_BUS_ID"))
        if slots > len(gpus):
            # Runs share a GPU: by default the first TensorFlow process takes nearly all
            # of its memory and the next cannot start.
            environ["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    environ[CHILD_CPUS] = ",".join(map(str, share))
    environ[CHILD_PARENT] = str(os.getpid())
    return {"cpus": share, "environ": environ}


# What a child is told by its launcher, read by ``set_up_child`` (no preexec_fn: that is
# unsafe in a process with threads, and the launcher has its output-copying threads).
CHILD_CPUS = "TFGAN_EXP_CPUS"
CHILD_PARENT = "TFGAN_EXP_PARENT"


def set_up_child(environ=None) -> None:
    """In a child, before training: asks for SIGTERM (checkpoint and stop) if the
    launcher dies, so that no orphan keeps training a run that a relaunched grid would
    train again. (Importing ``tfgan_exp`` has already pinned it to CHILD_CPUS.)"""
    environ = os.environ if environ is None else environ
    if not environ.get(CHILD_PARENT):
        return
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: an orphan finishes its run alone
    if os.getppid() != int(environ[CHILD_PARENT]):  # the launcher died before the prctl
        sys.exit(128 + signal.SIGTERM)


def already_trained(config: Config) -> bool:
    """The run's folder records all its epochs (and no divergence) and its newest
    checkpoint is at least as far: nothing to train. (grid.check has already compared
    the folder's settings with ``config``; --overwrite trains, unless this invocation
    has overwritten the folder already: ``RunDir.will_overwrite``.)"""
    run_dir = RunDir(config.run_dir)
    if (run_dir.will_overwrite(config, scheduler.invocation())
            or run_dir.saved_config() is None or run_dir.divergence()):
        return False
    records = run_dir.read_metrics()
    if not records or records[-1]["epoch"] < config.epochs:
        return False
    # A run killed between its last metrics line and its last checkpoint is not done
    # (the newest checkpoint as a resume finds it, state file or not).
    return run_dir.newest_checkpoint_step() >= records[-1]["step"]


def plan(config: Config, retry_diverged: bool = False) -> Tuple[str, str]:
    """What a grid would do with ``config``'s run, as (kind, detail): ("train", ""),
    ("overwrite", "") to train it after deleting what its folder holds (--overwrite),
    ("finished", ""), ("diverged", "") when it is skipped, or ("held", who holds it)."""
    run_dir = RunDir(config.run_dir)
    if already_trained(config):
        return "finished", ""
    overwrite = run_dir.will_overwrite(config, scheduler.invocation())
    if run_dir.divergence() and not retry_diverged and not overwrite:
        return "diverged", ""
    holder = lease_lib.holder(config.run_dir)
    if holder is not None and holder.get("state") != "stopping":
        return "held", lease_lib.describe(holder)
    if overwrite and set(_entries(config.run_dir)) - set(lease_lib.FILES):
        return "overwrite", ""
    return "train", ""


# Training images per epoch (the data sets' sizes), for ranking runs by cost only.
TRAINING_IMAGES = {"digits": 1797, "cifar10": 50000, "stl10": 100000}


def estimated_cost(config: Config) -> float:
    """A run's relative cost, to start the longest runs first: training images per epoch
    times epochs, times the networks' size, times the work per image (every image is one
    D update's real half; one G update per d_steps of them, costing about as much as a D
    update: 1 + 1/d_steps; WGAN-GP's penalty, a second backward pass, doubles D's part),
    plus the evaluations' images. Only the order matters, so a model of the work rather
    than a measurement: it ranks a 30-epoch run above a 10-epoch one, a CIFAR-10 run
    above a digits run, a wider or larger-image run above a smaller one."""
    config = config.resolved()
    size = (config.width / 16) ** 2 * (max(config.image_size, 8) / 32) ** 2
    images = TRAINING_IMAGES.get(config.dataset, 50000)
    penalty = 2.0 if config.d_loss == "wgan-gp" else 1.0
    per_image = penalty + 1 / config.d_steps
    evaluations = (config.epochs // config.eval_every + 1) if config.eval_every else 0
    # An evaluation's forward passes over eval_samples images count about a third of
    # training's (G forward, D forward and backward) per image.
    return size * (config.epochs * images * per_image
                   + evaluations * config.eval_samples / 3)


def longest_first(configs: List[Config],
                  first: Optional[Callable[[Config], bool]] = None) -> List[Config]:
    """The runs in the order a parallel grid starts them: those ``first`` picks (runs
    that other runs wait for: a study's search, before its tuned re-run can join), then
    the costliest first (stable), so that no slot is left to finish a long run alone
    while the others idle."""
    return sorted(configs, key=lambda c: (not (first and first(c)), -estimated_cost(c)))


def run_in_parallel(configs: List[Config], root: str, parallel: int,
                    trace_path: Optional[str] = None, process_per_run: bool = False,
                    started: Optional[float] = None,
                    more: Optional[Callable[[Dict[str, str]], List[Config]]] = None,
                    more_pending: Optional[Callable[[], bool]] = None,
                    first: Optional[Callable[[Config], bool]] = None) -> Tally:
    """Trains the runs ``parallel`` at a time, in ``parallel`` slot processes that each
    train run after run (``slots``), the costliest runs first.

    ``process_per_run``: a fresh process for every run instead (its start-up paid per
    run; a leak or a crash of the interpreter cannot touch the next run). A slot that
    dies (killed, its run's lease taken over) is replaced while runs are left.
    ``trace_path``: where to write the timeline (``timeline``); its summary is printed.
    ``started``: when the command started (its wall time counts from there).
    ``more``: asked, at the start and whenever a run has ended, for runs that have
    become ready to train (a study's phase that waits for another), given how each run
    that has ended did ({run_dir: "finished", "diverged", "failed", "held" or
    "stopped"}); they join the one queue, which is kept costliest first, after the
    runs ``first`` picks. ``more_pending``: whether ``more`` may still bring runs (a
    free slot is kept open for them while runs are under way).

    A slot that dies before it has read the run it was given (killed while idle, or at
    its start) gives that run back to the queue; two slots in a row that die before
    they could start TensorFlow stop the grid (``Tally.broken``) rather than fail every
    run in turn.
    """
    grid_start = time.time() if started is None else started
    tally = Tally(len(configs))
    cpus = sorted(os.sched_getaffinity(0))
    gpus = visible_gpus()
    lock = threading.Lock()
    waiting: List[Config] = []
    ended: Dict[str, str] = {}  # run_dir -> how it ended, for ``more``

    def enqueue(new: List[Config]) -> None:
        for config in new:
            if already_trained(config):  # a resumed grid: no process start-up for these
                print(f"[parallel] {run_name(config, root)} already trained for "
                      f"{config.epochs} epochs", flush=True)
                tally.finished += 1
                ended[config.run_dir] = "finished"
            else:
                waiting.append(config)
        waiting[:] = longest_first(waiting, first)

    def ask_for_more() -> None:
        while more is not None and not stop.is_set():
            new = more(dict(ended))
            if not new:
                return
            tally.total += len(new)
            enqueue(new)

    enqueue(configs)
    rows: Dict[int, List[timeline.Span]] = {}
    live: Dict[int, slots_lib.Slot] = {}
    inbox: "queue_lib.Queue" = queue_lib.Queue()
    stop = threading.Event()
    received: List[int] = []

    def forward(signum, frame):
        received.append(signum)
        stop.set()
        for slot in list(live.values()):
            if slot.process.poll() is None:
                slot.process.send_signal(signum)

    def give_next(slot: slots_lib.Slot) -> None:
        while waiting:
            config = waiting.pop(0)
            twin = grid_lib.twin_elsewhere(config)
            if not twin:
                break
            with lock:
                print(f"[parallel] {_twin_note(config, twin)}", flush=True)
            tally.held_runs.append(run_name(config, root))
            ended[config.run_dir] = "held"
        else:
            return  # the slot stays free; _dispatch closes it when nothing is left
        slot.give(config, run_name(config, root))
        where = f"CPUs {','.join(map(str, placements[slot.number]['cpus']))}"
        if gpus:
            where += f", GPU {placements[slot.number]['environ']['CUDA_VISIBLE_DEVICES']}"
        with lock:
            print(f"[parallel] started {slot.run.name} (pid {slot.pid}; {where}; slot "
                  f"{slot.number})", flush=True)

    def run_ended(slot: slots_lib.Slot, outcome: str, status: int,
                  end: Optional[float] = None) -> None:
        run = slot.run
        rows[slot.number].append(slot.run_span(outcome, status, end))
        slot.run = None
        ended[run.config.run_dir] = outcome.split()[0].rstrip(":")
        if ended[run.config.run_dir] == "taken":
            ended[run.config.run_dir] = "held"
        with lock:
            print(f"[parallel] {run.name} {outcome} (exit status {status})", flush=True)

    placements = {number: slot_environment(number, parallel, cpus, gpus)
                  for number in range(parallel)}
    deaths_before_ready = [0]  # slots in a row that died before TensorFlow had started

    def start_slot(number: int) -> slots_lib.Slot:
        slot = slots_lib.Slot(number, placements[number]["environ"], inbox, lock,
                              rows.setdefault(number, []))
        live[number] = slot
        if received and slot.process.poll() is None:
            # The signal came while this slot was being started, before it was in
            # ``live`` for ``forward`` to find: it stops too.
            slot.process.send_signal(received[0])
        return slot
    def may_grow() -> bool:
        return more is not None and (more_pending is None or more_pending())

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        ask_for_more()
        while True:
            _dispatch(live, waiting, may_grow(), stop.is_set() or bool(tally.broken),
                      process_per_run, give_next, start_slot, parallel)
            if not live:
                break
            slot, message = inbox.get()
            if message is not None:  # {"done": status}: the slot is free again
                status = int(message["done"])
                run_ended(slot, _count(tally, slot.run, status, received), status,
                          message.get("at"))
                ask_for_more()
                continue
            status = slot.wait()  # the process ended
            del live[slot.number]
            if slot.ready_at is None and not received:
                deaths_before_ready[0] += 1
                if deaths_before_ready[0] >= 2:
                    tally.broken = (f"two slot processes in a row ended before they could "
                                    f"start TensorFlow (the last with exit status "
                                    f"{status}; their output is above)")
            else:
                deaths_before_ready[0] = 0
            if slot.run is not None and not slot.run.acknowledged and not received:
                # It never had the run: the run goes back to the queue, first.
                with lock:
                    print(f"[parallel] slot {slot.number} (pid {slot.pid}) ended (exit "
                          f"status {status}) before it started {slot.run.name}; the run "
                          "goes back to the queue", flush=True)
                waiting.insert(0, slot.run.config)
                slot.run = None
            elif slot.run is not None:  # during a run: its outcome is the exit status
                run_ended(slot, _count(tally, slot.run, status, received), status)
                ask_for_more()
            elif slot.closed_at is None and not received:
                with lock:
                    print(f"[parallel] slot {slot.number} (pid {slot.pid}) ended between "
                          f"runs (exit status {status})", flush=True)
    except BaseException:
        # The launcher itself failed: its slots checkpoint and stop rather than train on
        # unwatched (or wait for a parent-death signal).
        _stop_slots(live)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        tally.signal = received[0]
    _finish_timeline(rows, parallel, grid_start, trace_path)
    return tally


def _stop_slots(live: Dict[int, "slots_lib.Slot"], grace: float = 120) -> None:
    """SIGTERM to every slot, then waits up to ``grace`` seconds for each (a run saves a
    checkpoint and stops), then SIGKILL."""
    for slot in live.values():
        slot.close()
        if slot.process.poll() is None:
            slot.process.send_signal(signal.SIGTERM)
    deadline = time.time() + grace
    for slot in live.values():
        try:
            slot.process.wait(max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            slot.process.kill()


def _dispatch(live: Dict[int, "slots_lib.Slot"], waiting: List[Config], may_grow: bool,
              stopping_now: bool, process_per_run: bool, give_next, start_slot,
              parallel: int) -> None:
    """Gives waiting runs to free slots (starting slots where there are none) and
    closes the slots that will get none: all free ones once no run is waiting and none
    is under way (while one is, a study's next phase may yet bring runs: ``may_grow``),
    or after each run with ``process_per_run``."""
    for slot in list(live.values()):
        if slot.run is None and slot.closed_at is None:
            if process_per_run and slot.ready_at is not None:
                slot.close()  # it has trained its one run
            elif waiting and not stopping_now:
                give_next(slot)
    for number in range(parallel):
        if number not in live and waiting and not stopping_now:
            give_next(start_slot(number))
    under_way = any(slot.run is not None for slot in live.values())
    if not waiting and (stopping_now or not (may_grow and under_way)):
        for slot in live.values():
            if slot.run is None:
                slot.close()


def _finish_timeline(rows: Dict[int, List[timeline.Span]], slots: int, start: float,
                     trace_path: Optional[str], end: Optional[float] = None) -> None:
    """Adds each slot's idle time from ``start`` to ``end`` (default now: what none of
    its start-up, run and exit spans covers), writes the trace and prints the summary."""
    end = time.time() if end is None else end
    for number in range(slots):
        row = rows.setdefault(number, [])
        covered = sorted((s["start"], s["end"]) for s in row
                         if s["cat"] in (timeline.STARTUP, timeline.RUN, timeline.EXIT))
        cursor = start
        for begin, finish in covered + [(end, end)]:
            if begin - cursor > 0.05:
                row.append({"name": "idle", "cat": timeline.IDLE, "start": cursor,
                            "end": begin, "args": {}})
            cursor = max(cursor, finish)
    spans = [s for row in rows.values() for s in row]
    numbers = timeline.summary(spans, slots, start, end)
    if trace_path:
        try:
            timeline.write_trace(trace_path, rows, numbers)
        except OSError as error:
            print(f"warning: cannot write the timeline {trace_path}: {error}",
                  file=sys.stderr, flush=True)
    print(timeline.breakdown_line(spans), file=sys.stderr)
    print(timeline.summary_line(numbers) + (f" ({trace_path})" if trace_path else ""),
          file=sys.stderr, flush=True)


def _count(tally: Tally, child: "slots_lib.Run", status: int, forwarded: List[int]) -> str:
    """Counts how a child ended; records a failure in its run's folder. A child ended by
    a signal this launcher forwarded was stopped (checkpointed, resumable); by another
    one (the OOM killer's SIGKILL, SIGABRT), it failed."""
    if status == 0:
        tally.finished += 1
        return "finished"
    if status == EXIT_DIVERGED:
        tally.diverged += 1
        return "diverged"
    if status == EXIT_HELD:
        tally.held_runs.append(child.name)
        return "held by another process; skipped"
    if status == lease_lib.EXIT_LOST:  # the folder is the other process's: no failed.json
        tally.held_runs.append(child.name)
        return "taken over by another process, which trains it now; stopped"
    signum = -status if status < 0 else status - 128 if status > 128 else None
    if signum is not None and signum in forwarded:
        return "stopped"
    run_dir = RunDir(child.config.run_dir)
    if signum is not None:
        why = _signal_death(signum, status)
    else:
        why = f"exited with status {status}"
    try:
        recorded = os.path.getmtime(run_dir.failed_path) >= child.started
    except OSError:
        recorded = False
    if signum is not None or not recorded:  # the child could not write it itself
        try:
            run_dir.record_failure(why, exit_status=status)
        except OSError as error:
            print(f"warning: cannot record the failure in {run_dir.path}: {error}",
                  file=sys.stderr, flush=True)
    tally.failed_runs.append(child.name)
    return f"failed: {why}"


def _signal_death(signum: int, status: int) -> str:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    if status > 0:  # 128 + N from the process itself (e.g. a SIGTERM sent to it alone)
        return f"exited with status {status} ({name}, not sent by the grid)"
    hint = {signal.SIGKILL: " (out of memory?)", signal.SIGABRT: " (aborted)",
            signal.SIGSEGV: " (segmentation fault)"}.get(signum, "")
    return f"killed by {name}{hint}"
