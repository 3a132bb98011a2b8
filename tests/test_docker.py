"""The image as clusters run it, checked statically (no Docker engine runs here): a
pinned base, a user of its own, an init process, the build context kept small, and
TensorBoard's port."""
import os
import re

from conftest import REPO


def instructions():
    text = open(os.path.join(REPO, "Dockerfile")).read().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_the_image_runs_as_a_user_of_its_own_under_an_init_process():
    lines = instructions()
    base = next(line for line in lines if line.startswith("FROM "))
    assert ":" in base and not base.endswith(":latest")  # a pinned tag
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    entrypoint = next(line for line in lines if line.startswith("ENTRYPOINT "))
    assert "tini" in entrypoint
    assert any(re.match(r"EXPOSE .*\b6006\b", line) for line in lines)
    # The pinned TensorFlow with its CUDA libraries, from the project's requirements.
    assert any("requirements-gpu.txt" in line and line.startswith("RUN pip install")
               for line in lines)
    # Any run-time UID can write the runs and the caches.
    assert any("chmod 1777 /runs /data" in line for line in lines)


def test_the_build_context_leaves_out_the_environment_runs_and_history():
    ignored = [line.strip() for line in open(os.path.join(REPO, ".dockerignore"))
               if line.strip() and not line.startswith("#")]
    for path in (".venv/", "runs/", ".git/"):
        assert path in ignored
    for needed in ("requirements.txt", "requirements-gpu.txt", "run.py", "tfgan_exp"):
        assert not any(needed.startswith(pattern.rstrip("/")) for pattern in ignored)
