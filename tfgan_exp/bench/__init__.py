"""Measurements of speed: ``python -m tfgan_exp.bench`` (``__main__``) and friends.

- ``step``: the training step against a plain tf.function loop (and PyTorch), the
  evaluation, FLOPs and the share of a training step each kind of kernel takes.
- ``launchers``: ``python -m tfgan_exp.bench_grid``, one grid sequential, a process per
  run, and in slots.
- ``profiling``: kernel time by op type from a profiler trace.
"""
