"""One run: build, resume, train, evaluate each epoch, record.

- ``trainer``: ``run(config)``, the whole of one run from its Config.
- ``checkpointing``: what a checkpoint holds, step saves, stopping at a safe point.
- ``summaries``: TensorBoard sections and HParams, no duplicate points after a resume.

Uses ``gan``, ``runtime`` and ``evaluation``; knows nothing of grids or reports.
"""
