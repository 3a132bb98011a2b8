"""Where and how a process runs: devices, signals, schedulers, one process per run folder.

- ``distribute``: the strategy (one per process), the cluster-wide agreement, GPU checks.
- ``replicated``: a network run on every replica of a strategy, chunk by chunk.
- ``stopping``: SIGTERM/SIGINT handled from the process's start.
- ``lease``: one process per run folder (flock, lease file, heartbeat).
- ``scheduler``: what Slurm and Kubernetes tell a task (job id, index, shard count).
- ``provenance``: which code, software and machine made each attempt at a run.
- ``timeline``: spans of where a process's wall time went, and the trace file.

Below evaluation, training and the study; imports no other layer of this project.
"""
