"""Many runs: grids, searches, and launching them, one after another or in parallel slots.

- ``grid``: lists of settings -> runs named by what varies; checks; shards.
- ``search``: the random search's space and seeded draws.
- ``preflight``: before a grid trains, every run's folder, data and Inception can be had.
- ``launch``: a grid's runs one after another, or in parallel slots, costliest first.
- ``slots``: a slot process that trains run after run for the launcher.
- ``prepare``: ``python -m tfgan_exp.prepare``, data sets and Inception before a cluster grid.
- ``k8s_wait``: ``python -m tfgan_exp.k8s_wait``, until a Kubernetes Job has ended.

Uses ``training`` (imported only where a run trains) and ``runtime``. The commands that
drive it, ``run.py`` (``tfgan_exp/cli.py``) and ``python -m tfgan_exp.study``, sit above.
"""
