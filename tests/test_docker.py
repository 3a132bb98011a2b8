"""The image as clusters run it. Checked statically (a pinned base, a user of its own,
an init process, the build context kept small, TensorBoard's port), and, marked
``image`` (``make test-image``; .ci/run starts a Docker engine for it), built and run
by a real Docker engine: a CPU build of this tree (``REQUIREMENTS=requirements.txt``;
the GPU build differs only in the CUDA wheels pip adds), trained as the owner of a
mounted folder (a UID the image does not know), stopped by ``docker stop`` (SIGTERM
through tini), resumed to every epoch once, and TensorBoard listing a run on its
exposed port. Each test's containers are removed with their volumes, and the image
when the module ends.

The base is the Dockerfile's (pulled), or ``TFGAN_EXP_IMAGE_BASE``, or where Docker
Hub is out of reach a stand-in built once with debootstrap and kept in the engine
(tests/standin_base.sh: Debian bookworm with its own Python 3.11, where the official
image builds Python 3.11 itself); without an engine, or without any base, the engine
tests are skipped and say why.
"""
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import urllib.request
import uuid

import pytest
import tensorflow as tf

from conftest import REPO, wait_for
from tfgan_exp.runtime import provenance

BASE = "python:3.11-slim-bookworm"
STANDIN_BASE = "tfgan-exp-standin-base:bookworm"
STRANGER = 4321  # a UID and GID the image does not know: any run-time user must work


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


def test_a_run_in_the_image_records_the_commit_the_image_was_built_from(monkeypatch,
                                                                       tmp_path):
    monkeypatch.setattr(provenance, "PACKAGE_ROOT", str(tmp_path))  # no git there
    monkeypatch.setenv("TFGAN_EXP_GIT_COMMIT", "0123456789abcdef-dirty")
    assert provenance.code_version() == {
        "version": provenance.tfgan_exp.__version__, "git_commit": "0123456789abcdef",
        "git_dirty": True, "source": "image build"}
    # A checkout's own git wins over a variable that may be stale there.
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    code = provenance.code_version()
    assert "source" not in code and code["git_commit"] != "0123456789abcdef"


# --- a real engine -----------------------------------------------------------------------

def docker(*args, timeout=120, check=True):
    done = subprocess.run(["docker", *args], capture_output=True, text=True,
                          timeout=timeout)
    if check:
        assert done.returncode == 0, f"docker {' '.join(args)}:\n{done.stderr[-3000:]}"
    return done


def present(tag):
    return docker("image", "inspect", tag, check=False).returncode == 0


def pulled(tag):
    try:
        return docker("pull", tag, timeout=600, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def base_image():
    """(the base to build on, None), or (None, why there is none): the Dockerfile's own,
    or TFGAN_EXP_IMAGE_BASE, or where Docker Hub is out of reach a stand-in, built once
    and kept in the engine as bases are."""
    if os.environ.get("TFGAN_EXP_IMAGE_BASE"):
        return os.environ["TFGAN_EXP_IMAGE_BASE"], None
    if present(BASE) or pulled(BASE):
        return BASE, None
    if present(STANDIN_BASE):
        return STANDIN_BASE, None
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        return None, (f"{BASE} cannot be pulled, and a stand-in needs root and "
                      "debootstrap (apt-get install debootstrap)")
    # Its own process group, so that a timeout stops debootstrap too.
    making = subprocess.Popen(["bash", os.path.join(REPO, "tests", "standin_base.sh"),
                               STANDIN_BASE], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = making.communicate(timeout=1200)
    except subprocess.TimeoutExpired:
        os.killpg(making.pid, signal.SIGKILL)
        raise
    assert making.returncode == 0, out[-3000:]
    return STANDIN_BASE, None


@pytest.fixture(scope="module")
def image():
    """(the tag of a CPU build of this tree, its commit, whether the engine maps UIDs)."""
    if not shutil.which("docker"):
        pytest.skip("no docker command")
    answer = docker("info", check=False)
    if answer.returncode != 0:
        pytest.skip(f"no Docker engine answers: {answer.stderr.strip()[-300:]}")
    base, why = base_image()
    if why:
        pytest.skip(why)
    commit = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty",
                             "--abbrev=40", "--exclude=*"], capture_output=True,
                            text=True).stdout.strip()
    tag = f"tfgan-exp-test:{uuid.uuid4().hex[:12]}"  # one per fixture: workers never share
    # The host's network: a build on a machine whose only way out is the host's own
    # resolver and proxy (as here) reaches PyPI and Debian's mirror that way too.
    try:
        docker("build", "--force-rm", "--network=host", "--build-arg", f"BASE={base}",
               "--build-arg", "REQUIREMENTS=requirements.txt", "--build-arg",
               f"GIT_COMMIT={commit}", "-t", tag, REPO, timeout=2400)
        # Rootless engines and userns-remap show other owners on the host.
        remapped = any(word in answer.stdout for word in ("rootless", "userns"))
        yield tag, commit, remapped
    finally:
        docker("rmi", "-f", tag, check=False)


@contextlib.contextmanager
def container(prefix):
    """A container name, removed with its anonymous volumes (the image declares /runs
    and /data as volumes) however the block ends."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        docker("rm", "-f", "-v", name, check=False)


def running(name):
    return docker("inspect", "-f", "{{.State.Running}}", name,
                  check=False).stdout.strip() == "true"


def owned_folder(folder):
    """``folder`` made, and the user that owns it as ``UID:GID``, for ``docker run
    --user``: as root, a user the image does not know (any UID must work); else ours."""
    folder.mkdir(mode=0o755)
    if os.geteuid() == 0:
        os.chown(folder, STRANGER, STRANGER)
    info = folder.stat()
    return f"{info.st_uid}:{info.st_gid}"


@pytest.mark.slow
@pytest.mark.image
def test_the_image_runs_as_any_user_under_tini_with_its_folders_writable(image):
    tag = image[0]
    with container("tfgan-exp-test-user") as name:
        done = docker("run", "--name", name, "--user", f"{STRANGER}:{STRANGER}", tag,
                      "sh", "-c",
                      'tr "\\0" " " < /proc/1/cmdline; echo; id -u; '
                      'touch /runs/x /data/x "$HOME/x" && echo writable')
    pid1, uid, writable = done.stdout.splitlines()
    assert pid1.split()[0] == "tini"
    assert uid == str(STRANGER) and writable == "writable"


@pytest.mark.slow
@pytest.mark.image
def test_docker_stop_saves_a_run_that_resumes_to_every_epoch_once(image, tmp_path):
    tag, commit, remapped = image
    runs = tmp_path / "runs"
    user = owned_folder(runs)  # the user's own folder, mounted, and the run as its owner
    # The default model (an epoch takes seconds even on fast CPUs), so that the stop
    # sent once epoch 1 is recorded lands while epochs 2-6 still train; the grace the
    # README gives docker run, not Docker's 10 s.
    train = ["--user", user, "--stop-timeout=120", "-v", f"{runs}:/runs", tag, "python",
             "run.py", "--dataset=digits", "--epochs=6", "--eval_every=0", "--deterministic",
             "--seed=3", "--run_dir=/runs/r"]
    metrics = runs / "r" / "metrics.jsonl"
    with container("tfgan-exp-test-run") as name:
        docker("run", "-d", "--name", name, *train)
        wait_for(lambda: metrics.exists() and metrics.read_text() or not running(name),
                 "epoch 1's metrics", 600, 0.2)
        docker("stop", name, timeout=180)
        state = json.loads(docker("inspect", name).stdout)[0]["State"]
        log = docker("logs", name)
        log = log.stdout + log.stderr
    # 128 + SIGTERM: stopped, not failed (0 would mean the run ended before the stop).
    assert state["ExitCode"] == 143, log[-3000:]
    assert "stopped by SIGTERM" in log and "saved /runs/r/checkpoints/ckpt-" in log

    with container("tfgan-exp-test-resume") as name:
        docker("run", "--name", name, *train, timeout=900)
    epochs = [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()]
    assert epochs == [1, 2, 3, 4, 5, 6]
    attempts = json.load(open(runs / "r" / "provenance.json"))["attempts"]
    assert [a["outcome"] for a in attempts] == ["stopped", "finished"]
    for attempt in attempts:
        built = attempt["code"]["git_commit"] + ("-dirty" if attempt["code"]["git_dirty"]
                                                 else "")
        assert built == commit and attempt["code"]["source"] == "image build"
    if not remapped:
        owners = {os.stat(os.path.join(folder, entry)).st_uid
                  for folder, dirs, files in os.walk(runs) for entry in dirs + files}
        assert owners == {runs.stat().st_uid}


@pytest.mark.slow
@pytest.mark.image
def test_tensorboard_serves_the_runs_on_the_exposed_port(image, tmp_path):
    tag = image[0]
    logs = tmp_path / "runs"
    logs.mkdir(mode=0o755)  # readable by the image's user
    with tf.summary.create_file_writer(str(logs / "a-run")).as_default():
        tf.summary.scalar("digits_score", 5.0, step=1)
    # Not through a proxy that http_proxy may name: the port is on this machine.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with container("tfgan-exp-test-tb") as name:
        docker("run", "-d", "--name", name, "-p", "127.0.0.1::6006", "-v", f"{logs}:/runs",
               tag, "tensorboard", "--logdir", "/runs", "--bind_all")
        port = docker("port", name, "6006").stdout.split()[0].rsplit(":", 1)[1]

        def runs_listed():
            try:
                with opener.open(f"http://127.0.0.1:{port}/data/runs", timeout=5) as page:
                    return json.loads(page.read())
            except (OSError, ValueError):  # not serving yet
                return []
        wait_for(lambda: "a-run" in runs_listed() or not running(name),
                 "TensorBoard's list of runs", 120, 0.5)
        assert "a-run" in runs_listed(), docker("logs", name).stderr[-3000:]
