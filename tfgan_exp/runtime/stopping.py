"""Stop requests (SIGTERM, SIGINT) from the moment a command starts until it exits.

A scheduler's SIGTERM comes with a short grace (Slurm's KillWait, a spot VM's notice,
``docker stop``: 10-30 s) before SIGKILL, and it may come at any moment: while
TensorFlow is imported, data loaded, the digits classifier trained, between the runs of
a grid. ``install()`` (called first thing by the training command, and by each
``--parallel`` child) makes such a signal raise ``Interrupted`` wherever the process is,
so that it stops within seconds; what it was writing is written atomically
(``rundir.written_atomically``) and the temporary file removed, so nothing is left
half-written.

Where stopping at an arbitrary point would cost work (training, an evaluation, the
checkpoint of a step), the code runs inside ``deferred()``: a signal is only recorded,
and that code polls ``received()`` at points where it can save and stop (after each
training step, between an evaluation's chunks). ``on_request`` registers what must
happen at once on a signal in either mode (a run folder's lease marks itself
"stopping", so that a replacement process waits for it instead of skipping the run).

Nothing here imports TensorFlow.
"""
import contextlib
import signal
import threading
from typing import Callable, List, Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):
    """SIGTERM or SIGINT stopped the process; ``signum`` says which (exit 128 + signum)."""

    def __init__(self, signum: int, message: str = ""):
        self.signum = signum
        name = signal.Signals(signum).name
        super().__init__(message or f"stopped by {name} before training started; nothing "
                         "of this run was written. Run the same command to start it.")


class _Requests:
    """The process's stop requests (one instance: signal handlers are per process)."""

    def __init__(self):
        self.received: Optional[int] = None  # the first signal, if one came
        self.installed = False  # by install(): handlers stay for the process's life
        self.deferred = 0  # nesting depth of deferred() blocks
        self.raised = False  # Interrupted is raised by a handler at most once
        self.callbacks: List[Callable[[int], None]] = []
        self.previous = {}

    def handle(self, signum, frame):
        if self.received is None:
            self.received = signum
        for callback in list(self.callbacks):
            callback(signum)
        if not self.deferred and not self.raised:
            self.raised = True  # a second signal during the clean-up must not cut it short
            raise Interrupted(signum)

    def set_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            return False  # Python delivers signals to the main thread only
        for sig in SIGNALS:
            self.previous[sig] = signal.signal(sig, self.handle)
        return True

    def restore_handlers(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


_REQUESTS = _Requests()


def install() -> None:
    """From now on, SIGTERM and SIGINT stop this process cleanly (see the module)."""
    if not _REQUESTS.installed:
        _REQUESTS.installed = _REQUESTS.set_handlers()


def reassert() -> None:
    """Sets this module's handlers again, if ``install`` set them: TensorFlow's
    coordination service (multi-worker strategies) installs a SIGTERM handler of its own
    in C++, under Python's, and Python would then never see the signal. It does so at
    the end of the strategy's construction, once every worker has joined: a SIGTERM in
    the few tens of milliseconds from there to this call is taken by that handler, and
    lost (measured: 50 ms on a 2-core CPU)."""
    if _REQUESTS.installed:
        for sig in SIGNALS:
            signal.signal(sig, _REQUESTS.handle)


def received() -> Optional[int]:
    """The first stop signal this process received, or None."""
    return _REQUESTS.received


def check() -> None:
    """Raises Interrupted if a stop signal has come (between the runs of a grid: one
    that came while a run finished does not start the next)."""
    if _REQUESTS.received is not None:
        raise Interrupted(_REQUESTS.received)


def done() -> None:
    """The process's work is done: a stop signal from now on is only recorded, so that
    a process ending after a complete run exits 0 whatever comes while it ends."""
    _REQUESTS.deferred += 1


@contextlib.contextmanager
def deferred():
    """Within the block a signal is only recorded (poll ``received()``).

    Without ``install()`` (a library caller, a test) the handlers are set for the block
    only and the previous ones put back after it, as before: outside it a SIGINT is
    then Python's KeyboardInterrupt again.
    """
    temporary = not _REQUESTS.installed and not _REQUESTS.previous
    if temporary:
        temporary = _REQUESTS.set_handlers()
    else:
        reassert()
    _REQUESTS.deferred += 1
    try:
        yield
    finally:
        _REQUESTS.deferred -= 1
        if temporary:
            _REQUESTS.restore_handlers()
            _REQUESTS.received = None  # a library caller's next run starts afresh


@contextlib.contextmanager
def on_request(callback: Callable[[int], None]):
    """Calls ``callback(signum)`` on every stop signal while the block runs (also
    when one has already come). It runs in a signal handler: keep it short."""
    _REQUESTS.callbacks.append(callback)
    try:
        if _REQUESTS.received is not None:
            callback(_REQUESTS.received)
        yield
    finally:
        _REQUESTS.callbacks.remove(callback)
