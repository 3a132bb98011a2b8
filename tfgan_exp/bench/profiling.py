"""Where a training step's time goes: kernel time by op type, from a profiler trace.

``trace`` records calls of a function with TensorFlow's profiler into a log directory
that TensorBoard's Profile tab draws (``pip install tensorboard-plugin-profile``). So that
the benchmark can answer without that plugin, ``kernels_by_type`` sums the same trace's
kernel events by op type. It reads the host plane, where TensorFlow's CPU kernels run;
on a GPU the host events are kernel launches, not the kernels, so use TensorBoard there.

Trace a function early, within its first few dozen calls: TensorFlow's executor learns
which kernels are cheap (variable reads, small element-wise ops) and, after about a
hundred calls, runs them without trace events, so they would vanish from the counts.
"""
import collections
import glob
import os
import re
from typing import Callable, Dict, Mapping, NamedTuple

# A kernel event on a compute thread is named "<node name>:<op type>", e.g.
# "gradient_tape/generator/g_deconv1/conv2d_transpose_1/Conv2DBackpropFilter:
# _MklNativeConv2DBackpropFilter"; the executor's own events contain "::".
_KERNEL_EVENT = re.compile(r"^(?!.*::)[^:]+:(?P<op_type>[A-Za-z0-9_]+)$")


def trace(run: Callable[[], None], calls: int, logdir: str) -> str:
    """Runs ``run`` ``calls`` times under the profiler; returns the trace's .xplane.pb."""
    import tensorflow as tf
    before = set(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")))
    tf.profiler.experimental.start(logdir)
    try:
        for _ in range(calls):
            run()
    finally:
        tf.profiler.experimental.stop()
    written = set(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")))
    (path,) = written - before
    return path


class KernelTime(NamedTuple):
    """One op type's kernels in a trace: total milliseconds (summed over threads), count."""
    ms: float
    count: int


def kernels_by_type(xplane_path: str) -> Dict[str, KernelTime]:
    """The host's kernel time and kernel count per op type in a trace."""
    # The XSpace protobuf ships with TensorFlow (tsl); it is the profiler's only output.
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    space = xplane_pb2.XSpace()
    with open(xplane_path, "rb") as f:
        space.ParseFromString(f.read())
    totals, counts = collections.Counter(), collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            for event in line.events:
                match = _KERNEL_EVENT.match(plane.event_metadata[event.metadata_id].name)
                if match:
                    totals[match["op_type"]] += event.duration_ps / 1e9
                    counts[match["op_type"]] += 1
    return {op_type: KernelTime(totals[op_type], counts[op_type]) for op_type in totals}


def format_table(profiles: Mapping[str, Mapping[str, KernelTime]], steps: int,
                 top: int = 12) -> str:
    """Text table per op type: kernel ms per step and share of each profile's total.

    The last rows give the total kernel time and the kernels run per step (each one a
    launch on a GPU, where a step is short and launches add up).

    Args:
      profiles: name -> ``kernels_by_type`` of a trace of ``steps`` training steps.
      steps: steps in every trace, to report per step.
      top: rows shown, by the first profile's time; the rest are summed as "other".
    """
    names = list(profiles)
    ms = {name: {t: k.ms for t, k in kernels.items()} for name, kernels in profiles.items()}
    first = ms[names[0]]
    op_types = sorted(set().union(*ms.values()), key=lambda t: -first.get(t, 0.0))
    shown, rest = op_types[:top], op_types[top:]
    header = f"{'op type':<40}" + "".join(f"{name + ' ms':>14}{'share':>7}" for name in names)
    lines = [header, "-" * len(header)]

    def row(label, ms_of):
        cells = ""
        for name in names:
            total = sum(ms[name].values()) or 1.0
            part = ms_of(ms[name])
            cells += f"{part / steps:14.2f}{100 * part / total:6.1f}%"
        lines.append(f"{label:<40}{cells}")

    for op_type in shown:
        row(op_type, lambda p, t=op_type: p.get(t, 0.0))
    if rest:
        row(f"other ({len(rest)} op types)", lambda p: sum(p.get(t, 0.0) for t in rest))
    row("total kernel time", lambda p: sum(p.values()))
    counts = "".join(f"{sum(k.count for k in profiles[name].values()) / steps:14.1f}{'':7}"
                     for name in names)
    lines.append(f"{'kernels per step':<40}{counts}")
    return "\n".join(lines)


def graph_flops(concrete_function) -> int:
    """Floating-point operations of one call of a traced function, counted on its graph.

    TensorFlow's graph profiler (a TF1 API, still the one that counts a graph) sums the
    FLOP count registered for each op at its static shapes. Ops inside nested functions,
    such as a loaded SavedModel's, are not counted: count a network built in Python.
    """
    import tensorflow as tf
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # the TF1 API's deprecation notice is not the user's concern
    try:
        return tf.compat.v1.profiler.profile(graph=concrete_function.graph,
                                             options=options).total_float_ops
    finally:
        logger.setLevel(level)
