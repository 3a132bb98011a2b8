"""Where a grid's wall time went: spans of each run's phases, a trace file, one summary line.

A run records spans as it goes (``span``): its data, the evaluation's classifier and
real images' features, the model, each epoch's training (and within the first epoch
of each fit, the first step, which traces the training step), each epoch's samples and
checkpoint, each evaluation. The launcher adds what only it sees: a slot process's
start-up (process start, imports, TensorFlow's start), the slot's idle time, its exit.

``write_trace`` writes them as a Chrome trace (the Trace Event Format's "X" events;
chrome://tracing, https://ui.perfetto.dev and TensorBoard's trace viewer read it), one
row per slot. ``summary`` is the one line a grid ends with: the epochs' seconds (the
work a faster launcher cannot remove), the rest (overhead), and

    efficiency = epochs' seconds / (slots x wall seconds), in [0, 1].

Times are wall-clock seconds since the epoch (``time.time()``), the one clock that
every process on a machine shares. Nothing here imports TensorFlow.
"""
import contextlib
import json
import os
import threading
import time
from typing import Callable, Dict, List, Optional

# Span categories. ``EPOCH`` is the training itself; every other one is overhead.
STARTUP = "start-up"          # a slot process's start, imports and TensorFlow's start
DATA = "data"                 # the training images, loaded and batched
SCORER = "evaluation set-up"  # the classifier and the real images' features
MODEL = "model"               # the networks, optimizers, run folder and restore
TRACING = "first step"        # the first step of a fit: mostly tracing the train step
EPOCH = "epoch"               # an epoch's training steps (a metrics line's ``seconds``)
EPOCH_END = "epoch end"       # the epoch's sample grid, metrics line and checkpoint
EVALUATION = "evaluation"     # score, distances, precision and recall of an epoch
RUN_END = "run end"           # fit's tear-down (its data iterator), the lease's release
RUN = "run"                   # a whole run, from its config to its end
IDLE = "idle"                 # a slot with nothing to do, waiting for the grid's end
EXIT = "exit"                 # a slot process's end, from its last run to its exit

Span = Dict  # {"name", "cat", "start", "end", "args"}: seconds since the epoch

_sink_lock = threading.Lock()
_sink: Optional[Callable[[Span], None]] = None


def set_sink(sink: Optional[Callable[[Span], None]]) -> None:
    """Where this process's spans go (a slot sends them to its launcher; a sequential
    grid keeps them in a list); None drops them (a single run records no timeline)."""
    global _sink
    with _sink_lock:
        _sink = sink


def record(name: str, category: str, start: float, end: float, **args) -> None:
    """A span that has already happened."""
    with _sink_lock:
        sink = _sink
    if sink is not None:
        sink({"name": name, "cat": category, "start": start, "end": end, "args": args})


@contextlib.contextmanager
def span(name: str, category: Optional[str] = None, **args):
    """Records the time the ``with`` block takes (also when it raises)."""
    start = time.time()
    try:
        yield
    finally:
        record(name, category or name, start, time.time(), **args)


def summary(spans: List[Span], slots: int, start: float, end: float) -> Dict[str, float]:
    """{"wall_seconds", "slots", "epoch_seconds", "overhead_seconds", "efficiency"} of a
    grid that ran from ``start`` to ``end`` on ``slots`` slots."""
    wall = max(end - start, 1e-9)
    epochs = sum(s["end"] - s["start"] for s in spans if s["cat"] == EPOCH)
    return {"wall_seconds": wall, "slots": slots, "epoch_seconds": epochs,
            "overhead_seconds": slots * wall - epochs,
            "efficiency": epochs / (slots * wall)}


def summary_line(numbers: Dict[str, float]) -> str:
    return (f"timeline: {numbers['wall_seconds']:.0f} s of wall time on "
            f"{numbers['slots']} slot(s); epochs {numbers['epoch_seconds']:.0f} s "
            f"(floor {numbers['epoch_seconds'] / numbers['slots']:.0f} s of wall), "
            f"overhead {numbers['overhead_seconds']:.0f} slot-s; efficiency "
            f"{numbers['efficiency']:.2f}")


def overhead_by_category(spans: List[Span]) -> Dict[str, float]:
    """Slot-seconds per category of overhead, largest first: the spans that are not
    epochs, outermost only (the run around its phases is not counted twice, nor a first
    step, which is inside its epoch). What a run spends outside its phases (the lease,
    the launcher's hand-over) is ``within runs, other``."""
    totals: Dict[str, float] = {}
    inside_runs = 0.0
    for s in spans:
        seconds = s["end"] - s["start"]
        if s["cat"] == RUN:
            inside_runs += seconds
        elif s["cat"] not in (TRACING, STARTUP, IDLE, EXIT):
            inside_runs -= seconds
        if s["cat"] in (RUN, TRACING, EPOCH):
            continue
        totals[s["cat"]] = totals.get(s["cat"], 0.0) + seconds
    if inside_runs > 0:
        totals["within runs, other"] = inside_runs
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def breakdown_line(spans: List[Span]) -> str:
    """What the overhead went to, largest first; and the first steps (mostly tracing),
    which are inside the epochs' seconds, as a metrics line's ``seconds`` are."""
    parts = [f"{name} {seconds:.0f} s" for name, seconds in
             overhead_by_category(spans).items() if seconds >= 0.5]
    first_steps = sum(s["end"] - s["start"] for s in spans if s["cat"] == TRACING)
    return ("timeline: overhead by kind (slot-s): " + (", ".join(parts) or "none")
            + f"; first steps (inside the epochs) {first_steps:.0f} s")


def write_trace(path: str, spans_by_slot: Dict[int, List[Span]],
                numbers: Dict[str, float]) -> None:
    """A Chrome trace JSON of the spans, one row (thread) per slot, written atomically."""
    origin = min((s["start"] for spans in spans_by_slot.values() for s in spans),
                 default=0.0)
    events = [{"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "grid"}}]
    for slot, spans in sorted(spans_by_slot.items()):
        events.append({"name": "thread_name", "ph": "M", "pid": 1, "tid": slot,
                       "args": {"name": f"slot {slot}"}})
        # Outer spans first at equal starts, so that viewers nest them correctly.
        for s in sorted(spans, key=lambda s: (s["start"], -s["end"])):
            events.append({"name": s["name"], "cat": s["cat"], "ph": "X", "pid": 1,
                           "tid": slot, "ts": round((s["start"] - origin) * 1e6),
                           "dur": max(round((s["end"] - s["start"]) * 1e6), 0),
                           "args": s.get("args", {})})
    document = {"traceEvents": events, "displayTimeUnit": "ms",
                "otherData": {k: str(v) for k, v in numbers.items()}}
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w") as handle:
        json.dump(document, handle)
    os.replace(temporary, path)


def main(argv):
    """``python -m tfgan_exp.timeline TRACE [--since=T]``: the trace's summary line; with
    --since (seconds since the epoch, e.g. ``date +%s`` when a study began) also the
    wall time since then, the compute floor (the epochs' seconds over the slots) and
    their ratio."""
    from absl import flags
    from tfgan_exp.command_line import fail
    if len(argv) != 2:
        fail("give one trace file (a grid's or a study's timeline.json)")
    try:
        with open(argv[1]) as handle:
            numbers = {k: float(v) for k, v in json.load(handle)["otherData"].items()}
    except (OSError, ValueError, KeyError) as error:
        fail(f"{argv[1]}: not a timeline written by a grid ({error})")
    numbers["slots"] = int(numbers["slots"])
    print(summary_line(numbers))
    since = flags.FLAGS.since
    if since:
        wall = time.time() - since
        floor = numbers["epoch_seconds"] / numbers["slots"]
        print(f"{wall:.0f} s of wall time since {since:.0f}; compute floor "
              f"{floor:.0f} s (the epochs' {numbers['epoch_seconds']:.0f} s over "
              f"{numbers['slots']} slot(s)); floor / wall = {floor / wall:.2f}")


def define_flags() -> None:
    """The command's one flag, defined by the command and not at import: training imports
    this module, and --since is not a training flag."""
    from absl import flags
    flags.DEFINE_float("since", 0.0, "A start time (seconds since the epoch): also print "
                       "the wall time since then, the compute floor and their ratio.")


if __name__ == "__main__":
    from tfgan_exp.command_line import run_command
    define_flags()
    run_command(main)
