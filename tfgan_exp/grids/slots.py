"""Slot processes: a ``--parallel`` grid's P processes, each training run after run.

A slot is ``python -m tfgan_exp.cli --slot``: it imports TensorFlow once, then reads one
run's Config (JSON) per line on stdin and trains it in this process (``trainer.run``
starts each run from Keras's fresh state and its own seeds, so a run trained after
another in a slot equals the same run in a process of its own), until stdin closes.
What a process pays once (its start, the imports, TensorFlow's start-up; the
classifier and the real images' features while the runs ask for the same) is then paid
once per slot rather than once per run.

It talks to its launcher on its stdout, which also carries the runs' own output:
a line starting with ``CONTROL`` is a message (JSON) for the launcher, never shown:

    {"ready": true}       the slot has imported TensorFlow and waits for runs
    {"started": true}     it has read the run it was given and starts it
    {"span": {...}}       a timeline span of the run under way (``timeline``)
    {"done": status}      the run ended with ``status`` (as ``cli`` exits for one run)

each with ``"at"``, the slot's time.time() when it was sent.

A run that stops the process (a stop signal, a lease taken over, a crash of the
interpreter) sends no ``done``: the launcher reads the process's exit status instead.
"""
import dataclasses
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List, Optional

from tfgan_exp.runtime import stopping, timeline
from tfgan_exp.config import Config, UsageError

CONTROL = "\x1etfgan_exp-slot "  # a record separator first: no run prints that
COMMAND = [sys.executable, "-m", "tfgan_exp.cli", "--slot"]  # a slot process
ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called"

_write_lock = threading.Lock()


def tell_launcher(**message) -> None:
    """Sends one message line, after everything the run printed before it."""
    with _write_lock:
        sys.stdout.flush()
        sys.stderr.flush()
        line = (CONTROL + json.dumps(dict(message, at=time.time())) + "\n").encode()
        os.write(sys.stdout.fileno(), line)  # one write: never split by other output


def serve(train_one: Callable[[Config], int]) -> None:
    """The slot's side: trains each Config that comes on stdin with ``train_one`` (which
    returns the run's exit status) until stdin closes. A stop signal raises
    ``stopping.Interrupted`` out of here, wherever it comes; one that came as a run
    ended (too late to stop it) stops the slot before it takes another."""
    timeline.set_sink(lambda span: tell_launcher(span=span))
    tell_launcher(ready=True)
    while True:
        stopping.check()
        try:
            line = sys.stdin.readline()
        except stopping.Interrupted as error:
            raise stopping.Interrupted(error.signum, "stopped by "
                                       f"{signal.Signals(error.signum).name} between runs")
        if not line:
            return
        tell_launcher(started=True)
        stopping.check()
        try:
            config = Config.from_dict(json.loads(line))
        except (ValueError, UsageError) as error:  # not from this package's launcher
            print(f"error: a run's settings could not be read: {error}", file=sys.stderr)
            tell_launcher(done=2)
            continue
        tell_launcher(done=train_one(config))


def exit_now(status: int = 0) -> None:
    """Ends a slot at once, once no run is under way (its stdin closed, or a stop signal
    came): its runs' files are written and closed and their leases released, and
    TensorFlow's orderly shutdown (seconds) would only keep the grid waiting."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


class Run:
    """A run given to a slot: what the launcher counts when it ends."""

    def __init__(self, config: Config, name: str):
        self.config, self.name = config, name
        self.started = time.time()
        self.acknowledged = False  # the slot said it read it: from then on it is its run


class Slot:
    """The launcher's side of one slot process.

    Its output is copied by a thread: a run's lines are printed with the run's name
    first, messages go to ``inbox`` as (slot, message), and the process's end as
    (slot, None). Spans go to ``spans``, the launcher's record of this slot's row.
    """

    def __init__(self, number: int, environ: Dict[str, str], inbox: "queue.Queue",
                 print_lock: threading.Lock, spans: List[timeline.Span]):
        self.number, self.inbox, self.spans = number, inbox, spans
        self.run: Optional[Run] = None
        self.spawned = time.time()
        self.closed_at: Optional[float] = None
        self.ready_at: Optional[float] = None  # when it had imported TensorFlow
        env = dict(os.environ, **environ)
        # The slot imports this package from where this process found it.
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(
            [package_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.process = subprocess.Popen(
            list(COMMAND), env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace", bufsize=1)
        self._print_lock = print_lock
        self._thread = threading.Thread(target=self._copy, daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def give(self, config: Config, name: str) -> None:
        """Starts ``config``'s run in this slot (the slot may still be starting up)."""
        self.run = Run(config, name)
        try:
            self.process.stdin.write(json.dumps(dataclasses.asdict(config)) + "\n")
            self.process.stdin.flush()
        except OSError:
            pass  # the process has died: its end comes through the inbox

    def close(self) -> None:
        """No more runs: the slot exits once its stdin is read to the end."""
        if self.closed_at is None:
            self.closed_at = time.time()
            try:
                self.process.stdin.close()
            except OSError:
                pass

    def _copy(self):
        try:
            self._copy_lines()
        finally:  # whatever happened here, the launcher hears that the process ended
            self.process.wait()
            if self.closed_at is not None:
                self.spans.append({"name": "exit", "cat": timeline.EXIT,
                                   "start": self.closed_at, "end": time.time(),
                                   "args": {}})
            self.inbox.put((self, None))

    def _copy_lines(self):
        for line in self.process.stdout:
            at = line.find(CONTROL)
            if at >= 0:
                # The message is one write; output without its newline yet (a C++ log
                # line cut short) may come before it on the same line.
                if line[:at].strip():
                    self._show(line[:at])
                try:
                    message = json.loads(line[at + len(CONTROL):])
                except ValueError:
                    continue
                if "span" in message:
                    self.spans.append(dict(message["span"], slot=self.number))
                elif "started" in message:
                    if self.run is not None:
                        self.run.acknowledged = True
                elif "ready" in message:
                    self.ready_at = message["at"]
                    self.spans.append({"name": "start-up", "cat": timeline.STARTUP,
                                       "start": self.spawned, "end": self.ready_at,
                                       "args": {"pid": self.pid}})
                else:
                    self.inbox.put((self, message))
                continue
            if line.startswith(ABSL_PREAMBLE):
                continue  # printed by TensorFlow's C++ start-up in every process; no news
            self._show(line)

    def _show(self, line: str) -> None:
        """Prints a line of the slot's output with the name of its run under way."""
        run = self.run
        try:
            with self._print_lock:
                print(f"[{run.name if run else f'slot {self.number}'}] {line.rstrip()}",
                      flush=True)
        except (OSError, ValueError):
            pass  # our own output is gone (a closed pipe): keep reading the slot's

    def run_span(self, outcome: str, status: int, end: Optional[float] = None
                 ) -> timeline.Span:
        """The span of the run under way, to ``end`` (default now): from when the slot
        could start it (a run given to a slot still starting up waits for that)."""
        start = max(self.run.started, self.ready_at or self.run.started)
        return {"name": self.run.name, "cat": timeline.RUN, "start": start,
                "end": max(start, time.time() if end is None else end),
                "args": {"outcome": outcome, "exit_status": status, "pid": self.pid}}

    def wait(self) -> int:
        """The exit status, once the process has ended and its output is copied."""
        self._thread.join()
        return self.process.wait()
