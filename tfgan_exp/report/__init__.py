"""What the runs under a folder say: ``python -m tfgan_exp.report DIR`` (``__main__``).

- ``analysis``: the runs under a folder, each counted once, grouped by their settings.
- ``statistics``: intervals with known coverage, tests, effect sizes, power, budget curves.
- ``figures``: the report's figures.
- ``writer``: the report's text, tables and verdicts.

Reads run folders only; imports ``grids`` for grid names, never TensorFlow.
"""
