"""Running the runs of a grid: one after another in this process, or P at once.

``run_sequentially`` trains each run in this process. ``run_in_parallel`` starts each
run as a process of its own (``python -m tfgan_exp.cli --run_config=JSON``), at most P
at a time: each is pinned to its own GPU where there are GPUs (CUDA_VISIBLE_DEVICES) and
to its share of the CPU cores (affinity and TensorFlow's thread pools), its output lines
are prefixed with its run's name, and a SIGTERM or SIGINT to this process is passed to
every run, which saves a checkpoint and stops. Either way a run already trained is
counted without loading anything, a diverged run is recorded in its folder, a run whose
folder another process holds (``lease``) is skipped with a note, a run that crashes or
is killed (by a signal this launcher did not send: the OOM killer's SIGKILL, SIGABRT) is
recorded in its folder's failed.json, and the grid goes on. A ``--parallel`` run whose
lease another process took over (its process exits ``lease.EXIT_LOST`` at once) counts
as held by another process, and nothing is written into its folder; in a sequential
grid the whole process exits so.

Exit status of a grid: 0 when every run finished or diverged (a divergence is a result),
1 when a run failed (crashed, was killed, or stopped with an error) or was held by
another process, 2 for a user's mistake found before training, 75 (``lease.EXIT_LOST``)
when a sequential grid's run was taken over, 128 + N when signal N stopped it.
"""
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import Dict, List, Optional, Tuple

from tfgan_exp import lease as lease_lib
from tfgan_exp import scheduler, stopping
from tfgan_exp.config import Config, TrainingDiverged, UsageError
from tfgan_exp.rundir import RunDir

ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called"
# Exit statuses of one run's process (``cli``): the launcher reads them back. A run
# started by the launcher (--run_config) exits EXIT_HELD when another process holds its
# folder; run by a user, it exits 2 then, as for any reason it cannot start.
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
        return line

    @property
    def exit_status(self) -> int:
        if self.signal is not None:
            return 128 + self.signal
        return 1 if self.failed or self.held else 0


def _listed(names: List[str]) -> str:
    if not names:
        return ""
    more = f" and {len(names) - LISTED} more" if len(names) > LISTED else ""
    return f" ({', '.join(names[:LISTED])}{more})"


def run_name(config: Config, root: str) -> str:
    """A run's name in output lines: its folder relative to the grid's root."""
    return os.path.relpath(config.run_dir, root) if root else config.run_dir


def run_sequentially(configs: List[Config], root: str) -> Tally:
    """Trains the runs one after another in this process.

    A run already trained is counted before anything is loaded for it. A divergence is
    counted; a run whose folder another process holds is skipped with a note; a run
    that crashes (any other exception: out of memory, an unreadable checkpoint, an I/O
    error, a problem found only once it starts) is recorded in its folder's failed.json;
    and the grid goes on to the next run. A stop signal (SIGTERM, SIGINT) stops the grid,
    the run under way saving a checkpoint.
    """
    tally = Tally(len(configs))
    try:
        from tfgan_exp import training  # imports TensorFlow: a signal may come meanwhile
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
            try:
                training.run(config)
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
    return tally


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


class _Child:
    """One run's process, with a thread copying its output lines, prefixed."""

    def __init__(self, config: Config, name: str, slot: int, placement: dict, lock):
        self.config, self.name, self.slot = config, name, slot
        self.started = time.time()
        env = dict(os.environ, **placement["environ"])
        # The child imports this package from where this process found it.
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(
            [package_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        command = [sys.executable, "-m", "tfgan_exp.cli",
                   f"--run_config={json.dumps(dataclasses.asdict(config))}"]
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            bufsize=1)
        self._thread = threading.Thread(target=self._copy, args=(lock,), daemon=True)
        self._thread.start()

    def _copy(self, lock):
        for line in self.process.stdout:
            if line.startswith(ABSL_PREAMBLE):
                continue  # printed by TensorFlow's C++ start-up in every process; no news
            with lock:
                print(f"[{self.name}] {line.rstrip()}", flush=True)

    def wait(self, timeout=None) -> int:
        status = self.process.wait(timeout)
        self._thread.join()
        return status


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


def run_in_parallel(configs: List[Config], root: str, parallel: int) -> Tally:
    """Trains the runs ``parallel`` at a time, each in a process of its own."""
    tally = Tally(len(configs))
    cpus = sorted(os.sched_getaffinity(0))
    gpus = visible_gpus()
    lock = threading.Lock()
    queue = []
    for config in configs:
        if already_trained(config):  # a resumed grid: no process start-up for these
            print(f"[parallel] {run_name(config, root)} already trained for "
                  f"{config.epochs} epochs", flush=True)
            tally.finished += 1
        else:
            queue.append(config)
    running: Dict[int, _Child] = {}
    stop = threading.Event()
    received: List[int] = []

    def forward(signum, frame):
        received.append(signum)
        stop.set()
        for child in list(running.values()):
            if child.process.poll() is None:
                child.process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while queue or running:
            while queue and len(running) < parallel and not stop.is_set():
                slot = min(set(range(parallel)) - set(running))
                config = queue.pop(0)
                placement = slot_environment(slot, parallel, cpus, gpus)
                child = _Child(config, run_name(config, root), slot, placement, lock)
                running[slot] = child
                if received and child.process.poll() is None:
                    # The signal came while this child was being started, before it was
                    # in ``running`` for ``forward`` to find: it stops too.
                    child.process.send_signal(received[0])
                where = f"CPUs {','.join(map(str, placement['cpus']))}"
                if gpus:
                    where += f", GPU {placement['environ']['CUDA_VISIBLE_DEVICES']}"
                with lock:
                    print(f"[parallel] started {child.name} (pid {child.process.pid}; "
                          f"{where})", flush=True)
            if not running:
                break
            _wait_for_any(running)
            for slot, child in list(running.items()):
                status = child.process.poll()
                if status is None:
                    continue
                child.wait()
                del running[slot]
                outcome = _count(tally, child, status, received)
                with lock:
                    print(f"[parallel] {child.name} {outcome} (exit status {status})",
                          flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        tally.signal = received[0]
    return tally


def _wait_for_any(running: Dict[int, _Child]) -> None:
    """Returns once some child has exited (polling: os.wait would steal the statuses)."""
    while all(child.process.poll() is None for child in running.values()):
        time.sleep(0.2)


def _count(tally: Tally, child: _Child, status: int, forwarded: List[int]) -> str:
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
