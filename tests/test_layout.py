"""The package's folders are its layers, and no import runs back up them.

Each subpackage may import its own modules and those of the layers below it, never one
above or beside it: the GAN knows nothing of how it is run, evaluation nothing of
training, training nothing of grids, grids nothing of the report. Imports inside
functions count too (they are how the heavy ones are deferred).
"""
import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "tfgan_exp")
# Lowest first. Top-level modules other than these are the commands (cli.py for run.py,
# study.py, and the short forwarding modules of python -m tfgan_exp.score etc.), above all;
# they may use one another (the study command reads run.py's flags).
LAYERS = [
    {"tfgan_exp", "config", "command_line", "data", "rundir"},
    {"gan"}, {"runtime"}, {"evaluation"}, {"training"}, {"grids"}, {"report"}, {"bench"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
TOP = len(LAYERS)


def unit(dotted: str) -> str:
    """'tfgan_exp.grids.launch' -> 'grids'; 'tfgan_exp.config' -> 'config'."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def rank(dotted: str) -> int:
    return RANK.get(unit(dotted), TOP)


def modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                relative = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3]
                yield path, relative.replace(os.sep, ".").replace(".__init__", "")


def _is_module(dotted: str) -> bool:
    """Whether ``dotted`` names a module or package of this project."""
    path = os.path.join(os.path.dirname(PACKAGE), *dotted.split("."))
    return os.path.exists(path + ".py") or os.path.exists(os.path.join(path, "__init__.py"))


def imported(path: str):
    """Every tfgan_exp module or package a file imports, anywhere in it."""
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (this project imports absolutely)"
            if node.module and node.module.split(".")[0] == "tfgan_exp":
                for alias in node.names:
                    candidate = f"{node.module}.{alias.name}"
                    yield candidate if _is_module(candidate) else node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "tfgan_exp":
                    yield alias.name


def test_every_subpackage_is_a_known_layer():
    packages = {name for name in os.listdir(PACKAGE)
                if os.path.isfile(os.path.join(PACKAGE, name, "__init__.py"))}
    assert packages == set().union(*LAYERS[1:])


@pytest.mark.parametrize("path,module", sorted(modules()), ids=lambda v: str(v)[-40:])
def test_no_import_runs_up_the_layers(path, module):
    upward = [other for other in imported(path)
              if rank(other) > rank(module)
              or (rank(other) == rank(module) and unit(other) != unit(module)
                  and rank(module) not in (0, TOP))]
    assert not upward, f"{module} (layer {rank(module)}) imports {upward}"
