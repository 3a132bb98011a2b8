"""The image as clusters run it. Checked statically (a pinned base, a user of its own,
an init process, the build context kept small, TensorBoard's port), and, marked
``image`` (``make test-image``; .ci/run starts a Docker engine for it), built and run
by a real Docker engine: a CPU build (``REQUIREMENTS=requirements.txt``; the GPU build
differs only in the CUDA wheels pip adds), trained as an arbitrary user into a mounted
folder, stopped by ``docker stop`` (SIGTERM through tini), resumed to every epoch once,
and TensorBoard served on its exposed port.

Where Docker Hub is out of reach, the base is a stand-in built with debootstrap
(tests/standin_base.sh: Debian bookworm and its Python 3.11, as the official image);
without an engine, or without a base, the engine tests are skipped and say why.
"""
import json
import os
import re
import shutil
import subprocess
import urllib.request

import pytest

from conftest import REPO, wait_for
from tfgan_exp.runtime import provenance

BASE = "python:3.11-slim-bookworm"
STANDIN_BASE = "tfgan-exp-standin-base:bookworm"
TEST_IMAGE = "tfgan-exp-test:cpu"
USER = "4321:4321"  # no user the image knows: any run-time UID must work


def instructions():
    text = open(os.path.join(REPO, "Dockerfile")).read().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_the_image_runs_as_a_user_of_its_own_under_an_init_process():
    lines = instructions()
    assert next(line for line in lines if line.startswith("FROM ")) == "FROM ${BASE}"
    base = next(line for line in lines if line.startswith("ARG BASE="))
    assert ":" in base and not base.endswith(":latest")  # a pinned tag by default
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    entrypoint = next(line for line in lines if line.startswith("ENTRYPOINT "))
    assert "tini" in entrypoint
    assert any(re.match(r"EXPOSE .*\b6006\b", line) for line in lines)
    # The pinned TensorFlow with its CUDA libraries, from the project's requirements.
    assert "ARG REQUIREMENTS=requirements-gpu.txt" in lines  # by default
    assert 'RUN pip install --no-cache-dir -r "${REQUIREMENTS}"' in lines
    # Any run-time UID can write the runs and the caches.
    assert any("chmod 1777 /runs /data" in line for line in lines)


def test_the_build_context_leaves_out_the_environment_runs_and_history():
    ignored = [line.strip() for line in open(os.path.join(REPO, ".dockerignore"))
               if line.strip() and not line.startswith("#")]
    for path in (".venv/", "runs/", ".git/"):
        assert path in ignored
    for needed in ("requirements.txt", "requirements-gpu.txt", "run.py", "tfgan_exp"):
        assert not any(needed.startswith(pattern.rstrip("/")) for pattern in ignored)


def test_a_run_in_the_image_records_the_commit_the_image_was_built_from(monkeypatch):
    monkeypatch.setenv("TFGAN_EXP_GIT_COMMIT", "0123456789abcdef")
    code = provenance.code_version()
    assert code["git_commit"] == "0123456789abcdef" and code["source"] == "image build"
    assert "git_dirty" not in code  # not known: the build context has no .git


# --- a real engine --------------------------------------------------------------------------

def docker(*args, timeout=120, check=True):
    done = subprocess.run(["docker", *args], capture_output=True, text=True,
                          timeout=timeout)
    if check:
        assert done.returncode == 0, f"docker {' '.join(args)}:\n{done.stderr[-3000:]}"
    return done


def base_image():
    """The Dockerfile's base, or a stand-in where Docker Hub is out of reach; None with
    the reason where neither can be had."""
    for tag in (os.environ.get("TFGAN_EXP_IMAGE_BASE"), BASE, STANDIN_BASE):
        if tag and docker("image", "inspect", tag, check=False).returncode == 0:
            return tag, None
    if docker("pull", BASE, timeout=600, check=False).returncode == 0:
        return BASE, None
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        return None, (f"{BASE} cannot be pulled, and a stand-in needs root and "
                      "debootstrap (apt-get install debootstrap)")
    made = subprocess.run(["bash", os.path.join(REPO, "tests", "standin_base.sh"),
                           STANDIN_BASE], capture_output=True, text=True, timeout=1200)
    assert made.returncode == 0, made.stderr[-3000:]
    return STANDIN_BASE, None


@pytest.fixture(scope="module")
def image():
    if not shutil.which("docker"):
        pytest.skip("no docker command")
    answer = docker("info", check=False)
    if answer.returncode != 0:
        pytest.skip(f"no Docker engine answers: {answer.stderr.strip().splitlines()[-1]}")
    base, why = base_image()
    if why:
        pytest.skip(why)
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    # The host's network: a build on a machine whose only way out is the host's own
    # resolver and proxy (as here) reaches PyPI and Debian's mirror that way too.
    docker("build", "--network=host", "--build-arg", f"BASE={base}",
           "--build-arg", "REQUIREMENTS=requirements.txt", "--build-arg",
           f"GIT_COMMIT={commit}", "-t", TEST_IMAGE, REPO, timeout=2400)
    yield TEST_IMAGE, commit
    docker("rmi", "-f", TEST_IMAGE, check=False)


@pytest.mark.image
def test_the_image_runs_as_any_user_under_tini_with_its_folders_writable(image):
    tag, _ = image
    done = docker("run", "--rm", "--user", USER, tag, "sh", "-c",
                  'tr "\\0" " " < /proc/1/cmdline; echo; id -u; '
                  'touch /runs/x /data/x "$HOME/x" && echo writable')
    pid1, uid, writable = done.stdout.splitlines()
    assert pid1.split()[0] == "tini"
    assert uid == USER.split(":")[0] and writable == "writable"


@pytest.mark.image
def test_docker_stop_saves_a_run_that_resumes_to_every_epoch_once(image, tmp_path):
    tag, commit = image
    runs = tmp_path / "runs"
    runs.mkdir()
    uid, gid = (int(part) for part in USER.split(":"))
    os.chown(runs, uid, gid)  # the user's own folder, mounted; the run uses their UID
    # The default model (an epoch takes seconds even on fast CPUs), so that the stop
    # sent once epoch 1 is logged lands while epochs 2-4 still train.
    train = ["--user", USER, "-v", f"{runs}:/runs", tag, "python", "run.py",
             "--dataset=digits", "--epochs=4", "--eval_every=0", "--deterministic",
             "--seed=3", "--run_dir=/runs/r"]
    name = f"tfgan-exp-test-{os.getpid()}"
    docker("run", "-d", "--name", name, *train)
    try:
        wait_for(lambda: "epoch 1/4" in docker("logs", name).stdout, "epoch 1's line", 600,
                 0.5)
        docker("stop", "--time=60", name, timeout=120)
        status = json.loads(docker("inspect", name).stdout)[0]["State"]
        log = docker("logs", name)
        log = log.stdout + log.stderr
    finally:
        docker("rm", "-f", name, check=False)
    assert status["ExitCode"] == 143, log[-3000:]  # 128 + SIGTERM: stopped, not failed
    assert "stopped by SIGTERM" in log and "saved /runs/r/checkpoints/ckpt-" in log

    docker("run", "--rm", *train, timeout=600)
    run = runs / "r"
    epochs = [json.loads(line)["epoch"] for line in open(run / "metrics.jsonl")]
    assert epochs == [1, 2, 3, 4]
    attempts = json.load(open(run / "provenance.json"))["attempts"]
    assert [a["outcome"] for a in attempts] == ["stopped", "finished"]
    assert all(a["code"]["git_commit"] == commit for a in attempts)
    owners = {os.stat(os.path.join(folder, entry)).st_uid
              for folder, dirs, files in os.walk(run) for entry in dirs + files}
    assert owners == {uid}


@pytest.mark.image
def test_tensorboard_serves_the_runs_on_the_exposed_port(image, tmp_path):
    tag, _ = image
    name = f"tfgan-exp-test-tb-{os.getpid()}"
    docker("run", "-d", "--name", name, "-p", "127.0.0.1::6006", "-v", f"{tmp_path}:/runs",
           tag, "tensorboard", "--logdir", "/runs", "--bind_all")
    try:
        port = docker("port", name, "6006").stdout.split()[0].rsplit(":", 1)[1]

        def serves():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
                    return page.status == 200 and b"TensorBoard" in page.read()
            except OSError:
                return False
        wait_for(serves, "TensorBoard on the exposed port", 120, 0.5)
    finally:
        docker("rm", "-f", name, check=False)
