"""The README and docs/ cannot drift from the code: their links and anchors resolve, every
flag they name exists, every flag of run.py is on the flags page, and the quick start's
smoke test runs as written."""
import ast
import glob
import json
import os
import re
import shlex

import pytest

from conftest import REPO, run_command

PAGES = [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs",
                                                                          "*.md")))
FLAGS_PAGE = os.path.join(REPO, "docs", "running.md")
# The tool's commands, each with the flags it defines (and absl's own).
COMMANDS = [("run.py",), ("-m", "tfgan_exp.report"), ("-m", "tfgan_exp.score"),
            ("-m", "tfgan_exp.prepare"), ("-m", "tfgan_exp.bench"),
            ("-m", "tfgan_exp.bench_grid"), ("-m", "tfgan_exp.study"),
            ("-m", "tfgan_exp.timeline"), ("-m", "tfgan_exp.k8s_wait")]
# Flags the pages name that belong to other programs: sbatch, scancel, docker, kubectl,
# pip, tensorboard, nvidia-smi, git.
FOREIGN = {"array", "gres", "cpus-per-task", "mem", "time", "requeue", "signal", "output",
           "open-mode", "export", "parsable", "dependency", "kill-on-invalid-dep", "wrap",
           "job-name", "gpus", "init", "cascade", "wait", "index-url", "quiet", "upgrade",
           "helpfull", "help", "user", "partition", "account", "qos", "dry-run",
           "logdir", "bind_all", "build-arg", "query-gpu", "stop-timeout", "always",
           "dirty", "abbrev", "exclude"}


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: str) -> set:
    with open(path) as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for page in PAGES:
        text = open(page).read()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path \
                else page
            if not os.path.exists(resolved):
                broken.append(f"{os.path.relpath(page, REPO)}: {target} (no such file)")
            elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
                broken.append(f"{os.path.relpath(page, REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


@pytest.fixture(scope="module")
def tool_flags():
    """Every flag any of the tool's commands defines, from their --helpfull."""
    names = set()
    for command in COMMANDS:
        result = run_command(*command, "--helpfull", timeout=120)
        assert result.returncode == 0, (command, result.stderr[-2000:])
        names |= set(re.findall(r"^\s+--(?:\[no\])?([\w-]+)", result.stdout, re.M))
    return names


@pytest.mark.slow
def test_every_flag_the_pages_name_exists(tool_flags):
    unknown = []
    for page in PAGES:
        text = open(page).read()
        # (a name ending in * is a family, such as --lr_*)
        for name in re.findall(r"(?<![\w-])--([a-z][\w-]*)(?![\w*-])", text):
            if name not in tool_flags and name not in FOREIGN:
                unknown.append(f"{os.path.relpath(page, REPO)}: --{name}")
    assert not unknown, "\n".join(sorted(set(unknown)))


def test_every_command_the_pages_and_job_files_name_is_one_checked_here():
    named = set()
    for path in PAGES + glob.glob(os.path.join(REPO, "jobs", "*")) + [
            os.path.join(REPO, "Makefile")]:
        text = open(path).read()
        named |= set(re.findall(r"-m\"?,?\s+\"?(tfgan_exp[\w.]*)", text))
    assert named == {command[1] for command in COMMANDS[1:]}


def command_home(module: str) -> str:
    """The file that holds a ``python -m`` command: the module ``run_command(..., home=M)``
    names in a forwarding module or a package's __main__, else the module itself."""
    path = os.path.join(REPO, *module.split("."))
    path = os.path.join(path, "__main__.py") if os.path.isdir(path) else path + ".py"
    tree = ast.parse(open(path).read())
    imported = {alias.asname or alias.name: f"{node.module}.{alias.name}"
                for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "home" and \
                isinstance(node.value, ast.Name):
            return os.path.join(REPO, *imported[node.value.id].split(".")) + ".py"
    return path


@pytest.mark.parametrize("command", [c for c in COMMANDS if c[0] == "-m"], ids=lambda c: c[1])
def test_each_commands_help_shows_its_own_text_and_flags(command):
    """The short names forward to the modules that hold the commands (the Layout in
    docs/design.md); --help still shows that module's docstring and its own flags."""
    result = run_command(*command, "--help", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    first_line = ast.get_docstring(ast.parse(open(command_home(command[1])).read()))
    assert result.stdout.strip().splitlines()[0] == first_line.splitlines()[0]
    assert re.search(r"^\s+--\w+", result.stdout, re.M), result.stdout


def test_every_flag_of_run_py_is_on_the_flags_page():
    result = run_command("run.py", "--help", timeout=120)
    defined = set(re.findall(r"^\s+--(?:\[no\])?([\w-]+)", result.stdout, re.M))
    page = open(FLAGS_PAGE).read()
    missing = sorted(name for name in defined - {"slot"}
                     if f"`--{name}" not in page)
    assert defined and not missing, missing


def test_the_readme_stays_short_and_speaks_to_users():
    text = open(PAGES[0]).read()
    assert len(text) <= 12_000
    for page in PAGES:
        assert "session" not in open(page).read().lower(), page


@pytest.mark.slow
def test_the_quick_starts_smoke_test_runs_as_written(tmp_path, cache_dir):
    text = open(PAGES[0]).read()
    command = re.search(r"`\.venv/bin/python (run\.py [^`]*--run_dir=/tmp/smoke)`", text)
    assert command, "the README's smoke test command"
    args = [a.replace("/tmp/smoke", str(tmp_path / "smoke"))
            for a in shlex.split(command.group(1))]
    # The default cache is the session's: its digits classifier is trained once.
    result = run_command(*args, timeout=600, env={"TFGAN_EXP_CACHE": cache_dir})
    assert result.returncode == 0, result.stderr[-3000:]
    # (The one test of run.py training end to end as a user starts it.)
    assert "epoch 1/1" in result.stdout and "img/s" in result.stdout
    assert "digits score" in result.stdout
    record = json.loads((tmp_path / "smoke" / "metrics.jsonl").read_text())
    assert record["epoch"] == 1 and record["digits_score"] >= 1.0
    assert sorted(os.listdir(tmp_path / "smoke" / "samples")) == ["epoch_0001.png"]
