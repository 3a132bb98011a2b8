"""The job files for Slurm and Kubernetes: parsed, and their commands dry-run task by task.

Each task's command runs for real with --dry_run, which prints the runs it would train
and writes nothing: together the tasks must cover the grid, each run exactly once.
"""
import os
import re
import signal
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, run_command, wait_for

JOBS = os.path.join(REPO, "jobs")


def manifests(name: str):
    """The objects of a (multi-document) manifest in jobs/."""
    with open(os.path.join(JOBS, name)) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def would_train(output: str):
    return [line.split("would train ", 1)[1].split("  (")[0] for line in output.splitlines()
            if line.startswith("would train ")]


def test_shell_scripts_parse():
    for name in ("slurm_grid.sh", "slurm_submit.sh", "k8s_run.sh"):
        result = subprocess.run(["bash", "-n", os.path.join(JOBS, name)],
                                capture_output=True, text=True)
        assert result.returncode == 0, (name, result.stderr)


@pytest.mark.slow
def test_slurm_array_tasks_cover_the_grid_once(tmp_path):
    script = os.path.join(JOBS, "slurm_grid.sh")
    last = int(re.search(r"^#SBATCH --array=0-(\d+)$", open(script).read(), re.M).group(1))
    env = dict(os.environ, RUN_DIR=str(tmp_path / "grid"), PYTHON=sys.executable,
               EXTRA_FLAGS="--dry_run", SLURM_ARRAY_TASK_MIN="0",
               SLURM_ARRAY_TASK_COUNT=str(last + 1))
    trained = []
    for task in range(last + 1):
        result = subprocess.run(["bash", script], cwd=REPO, capture_output=True, text=True,
                                env=dict(env, SLURM_ARRAY_TASK_ID=str(task)))
        assert result.returncode == 0, result.stderr
        trained += would_train(result.stdout)
    whole = run_command("run.py", "--dataset=cifar10,stl10", "--g_loss=minimax,nonsat,hinge",
                        "--seeds=3", f"--run_dir={tmp_path / 'grid'}", "--dry_run")
    assert whole.returncode == 0, whole.stderr
    assert trained == would_train(whole.stdout) and len(trained) == 18  # task i: run i
    assert not os.path.exists(tmp_path / "grid")  # a dry run writes nothing
    # Resubmitted tasks (sbatch --array=4,11) and tasks of a stepped array past the
    # grid (--array=0-34:2 has 20..34): exactly their own shards, or none.
    for task, runs in ((4, trained[4:5]), (11, trained[11:12]), (20, []), (34, [])):
        result = subprocess.run(["bash", script], cwd=REPO, capture_output=True, text=True,
                                env=dict(env, SLURM_ARRAY_TASK_ID=str(task),
                                         SLURM_ARRAY_TASK_MIN="4",
                                         SLURM_ARRAY_TASK_COUNT="2"))
        assert result.returncode == 0, result.stderr
        assert would_train(result.stdout) == runs


@pytest.mark.slow
def test_kubernetes_indexed_job_covers_the_grid_once_then_reports(tmp_path):
    grid_job = yaml.safe_load(open(os.path.join(JOBS, "k8s_grid.yaml")))
    report_job = next(doc for doc in manifests("k8s_report.yaml") if doc["kind"] == "Job")
    spec = grid_job["spec"]
    count = spec["completions"]
    assert spec["completionMode"] == "Indexed" and spec["parallelism"] == count
    container = spec["template"]["spec"]["containers"][0]
    args = container["args"]
    assert f"--shard=auto/{count}" in args
    run_dir = next(a.split("=", 1)[1] for a in args if a.startswith("--run_dir="))
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    assert any(run_dir.startswith(m + "/") for m in mounts)  # on the shared volume
    report = report_job["spec"]["template"]["spec"]["containers"][0]
    assert report["command"] == ["tini", "--", "python", "-m", "tfgan_exp.report"]
    assert report["args"] == [run_dir]
    local = [a for a in args if not a.startswith("--run_dir=")] + [
        f"--run_dir={tmp_path / 'grid'}", "--dry_run"]
    assert container["command"] == ["tini", "--", "python", "run.py"]
    trained = []
    for index in range(count):
        result = run_command("run.py", *local, env={"JOB_COMPLETION_INDEX": str(index)})
        assert result.returncode == 0, result.stderr
        trained += would_train(result.stdout)
    assert len(trained) == len(set(trained)) == 18


def test_kubernetes_prepares_the_grids_datasets_first_on_the_data_volume():
    grid = yaml.safe_load(open(os.path.join(JOBS, "k8s_grid.yaml")))["spec"]["template"]
    prepare = yaml.safe_load(open(os.path.join(JOBS, "k8s_prepare.yaml")))["spec"]["template"]
    grid_container, container = grid["spec"]["containers"][0], prepare["spec"]["containers"][0]
    assert container["command"] == ["tini", "--", "python", "-m", "tfgan_exp.prepare"]
    datasets = next(a for a in grid_container["args"] if a.startswith("--dataset="))
    assert container["args"] == [datasets]
    data_mount = next(m for m in grid_container["volumeMounts"] if m["name"] == "data")
    assert data_mount in container["volumeMounts"]
    order = open(os.path.join(JOBS, "k8s_run.sh")).read()
    assert order.index("k8s_prepare.yaml") < order.index("k8s_grid.yaml") < order.index(
        "k8s_report.yaml")


def test_slurm_task_saves_before_its_time_limit_and_requeues_only_then(tmp_path):
    """The batch script with stand-ins for Python (run.py saving on SIGTERM, exit 143)
    and scontrol: Slurm's warning before the time limit (USR1) ends in a requeue; a
    SIGTERM (scancel) stops the run the same way but is not requeued."""
    started, requeued = tmp_path / "started", tmp_path / "requeued"
    fake_python = tmp_path / "python"
    fake_python.write_text(f"#!/bin/bash\ntrap 'exit 143' TERM\ntouch {started}\n"
                           "while :; do sleep 0.05; done\n")
    scontrol = tmp_path / "scontrol"
    scontrol.write_text(f'#!/bin/bash\necho "$@" > {requeued}\n')
    for stand_in in (fake_python, scontrol):
        stand_in.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake_python), SLURM_JOB_ID="4242",
               PATH=f"{tmp_path}:{os.environ['PATH']}")
    for sent, requeues in ((signal.SIGUSR1, True), (signal.SIGTERM, False)):
        started.unlink(missing_ok=True)
        requeued.unlink(missing_ok=True)
        task = subprocess.Popen(["bash", os.path.join(JOBS, "slurm_grid.sh")], cwd=REPO,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        wait_for(started.exists, "the stand-in's start", 30, 0.05, process=task)
        task.send_signal(sent)
        out, err = task.communicate(timeout=30)
        assert task.returncode == 143, (sent, err)  # run.py's own status
        assert requeued.exists() == requeues, sent
        if requeues:
            assert requeued.read_text().split() == ["requeue", "4242"]
            assert "requeueing 4242" in out


def test_slurm_submit_chains_preparation_grid_and_report(tmp_path):
    """slurm_submit.sh with a stand-in sbatch that records its arguments."""
    log = tmp_path / "sbatch.log"
    sbatch = tmp_path / "sbatch"
    sbatch.write_text(f'#!/bin/bash\necho "$@" >> {log}\necho $(( $(wc -l < {log}) + 100 ))\n')
    sbatch.chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}", PYTHON=sys.executable,
               GRID_FLAGS="--dataset=stl10 --g_loss=minimax,hinge --seeds=2",
               RUN_DIR=str(tmp_path / "grid"))
    result = subprocess.run(["bash", os.path.join(JOBS, "slurm_submit.sh"), "--gres=gpu:1",
                             "--mem=32G"], cwd=tmp_path, env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    prepare, grid, report_ = log.read_text().splitlines()
    assert "tfgan_exp.prepare --dataset=stl10" in prepare  # the grid's own datasets
    assert "--dependency=afterok:101" in grid and grid.endswith("jobs/slurm_grid.sh")
    assert "--array=0-3" in grid  # one task per run of the 4-run grid
    assert "--gres=gpu:1 --mem=32G" in grid  # the site's resources, passed through
    assert all("--export=ALL" in job for job in (prepare, grid, report_))
    assert "--dependency=afterany:102" in report_ and "tfgan_exp.report" in report_
    assert "grid 102 (4 tasks) and its report 103" in result.stdout
    none = subprocess.run(["bash", os.path.join(JOBS, "slurm_submit.sh")], cwd=tmp_path,
                          env=dict(env, PYTHON="no-such-python"), capture_output=True,
                          text=True)
    assert none.returncode == 2 and "set VENV or PYTHON" in none.stderr
    log.unlink()
    bad = subprocess.run(["bash", os.path.join(JOBS, "slurm_submit.sh")], cwd=tmp_path,
                         env=dict(env, GRID_FLAGS="--g_loss=bogus --seeds=2"),
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--g_loss" in bad.stderr and "bogus" in bad.stderr
    assert not log.exists()  # nothing submitted


def test_slurm_task_passes_its_token_and_checkpoints_every_few_minutes(tmp_path):
    """A stand-in for Python records what the batch script hands to run.py."""
    log = tmp_path / "log"
    fake_python = tmp_path / "python"
    fake_python.write_text(f'#!/bin/bash\necho "$TFGAN_EXP_INVOCATION $*" > {log}\n')
    fake_python.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake_python), SLURM_ARRAY_JOB_ID="77",
               SLURM_ARRAY_TASK_ID="11", SLURM_JOB_ID="90")
    env.pop("TFGAN_EXP_INVOCATION", None)
    result = subprocess.run(["bash", os.path.join(JOBS, "slurm_grid.sh")], cwd=REPO, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    token, *args = log.read_text().split()
    assert token == "77_11"  # the same after a requeue: --overwrite happens once
    assert "--shard=auto" in args and "--checkpoint_every_steps=10000" in args


def test_every_kubernetes_container_runs_under_the_images_init():
    """A container's command replaces the image's ENTRYPOINT: each must name tini, or
    Python is PID 1, which drops a SIGTERM sent before its handlers are installed."""
    entrypoint = next(line for line in open(os.path.join(REPO, "Dockerfile"))
                      if line.startswith("ENTRYPOINT"))
    init = yaml.safe_load(entrypoint.split(None, 1)[1])
    assert init == ["tini", "--"]
    containers = [container for name in ("k8s_prepare.yaml", "k8s_grid.yaml",
                                         "k8s_report.yaml")
                  for doc in manifests(name) if doc["kind"] == "Job"
                  for container in (doc["spec"]["template"]["spec"].get("initContainers", [])
                                    + doc["spec"]["template"]["spec"]["containers"])]
    assert len(containers) == 4
    for container in containers:
        assert container["command"][:2] == init, container["name"]


def test_kubernetes_pods_carry_the_jobs_uid_as_their_token():
    container = yaml.safe_load(open(os.path.join(JOBS, "k8s_grid.yaml")))[
        "spec"]["template"]["spec"]["containers"][0]
    token = next(e for e in container["env"] if e["name"] == "TFGAN_EXP_INVOCATION")
    assert token["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['batch.kubernetes.io/controller-uid']")
    assert "--checkpoint_every_steps=10000" in container["args"]


def test_make_clean_keeps_runs_which_only_clean_runs_removes():
    clean = subprocess.run(["make", "-n", "-C", REPO, "clean"], capture_output=True,
                           text=True)
    assert clean.returncode == 0 and "rm -rf .venv" in clean.stdout
    assert "runs" not in clean.stdout
    clean_runs = subprocess.run(["make", "-n", "-C", REPO, "clean-runs"],
                                capture_output=True, text=True)
    assert clean_runs.returncode == 0 and "rm -rf runs" in clean_runs.stdout


def test_make_study_stops_before_the_report_when_a_run_failed(tmp_path):
    """``make study`` with a stand-in for Python whose grid ends as one with a failed
    run does: the report is not made, and the output says why."""
    log = tmp_path / "log"
    fake_python = tmp_path / "python"
    fake_python.write_text(f'#!/bin/bash\necho "$*" >> {log}\n'
                           'echo "grid: 15 runs: 14 finished, 0 diverged, 1 failed '
                           '(g_loss=minimax,seed=3)" >&2\nexit 1\n')
    fake_python.chmod(0o755)
    result = subprocess.run(["make", "-s", "-C", REPO, "study", "STAMP=", f"PY={fake_python}",
                             f"STUDY_DIR={tmp_path / 'study'}", "PARALLEL=1"],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "1 failed (g_loss=minimax,seed=3)" in result.stderr
    assert "make study: stopped before the report" in result.stderr
    assert len(log.read_text().splitlines()) == 1 and "report" not in log.read_text()


# --- Kubernetes: schemas, failure policy, the run script, the in-cluster wait ----------

@pytest.mark.slow
def test_every_manifest_validates_against_the_kubernetes_schemas_in_strict_mode():
    import kubernetes_validate
    version = kubernetes_validate.latest_version()
    names = sorted(n for n in os.listdir(JOBS) if n.endswith(".yaml"))
    assert {"k8s_grid.yaml", "k8s_prepare.yaml", "k8s_report.yaml", "k8s_volumes.yaml"} <= set(
        names)
    for name in names:
        for doc in manifests(name):
            kubernetes_validate.validate(doc, version, strict=True)  # raises if invalid
    # Strict mode does catch a field the API does not know.
    job = manifests("k8s_grid.yaml")[0]
    job["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, version, strict=True)


def pod_failure_action(rules, exit_code=None, conditions=()):
    """What a Job's podFailurePolicy does with a failed pod, as Kubernetes decides it: the
    first rule that matches its container's exit code or one of its conditions, else
    'Count' (a retry of backoffLimitPerIndex is used)."""
    for rule in rules:
        on_codes = rule.get("onExitCodes")
        if on_codes and exit_code is not None:
            inside = exit_code in on_codes["values"]
            if inside == (on_codes["operator"] == "In"):
                return rule["action"]
        for condition in rule.get("onPodConditions", []):
            if condition["type"] in conditions:
                return rule["action"]
    return "Count"


def test_the_grid_job_survives_preemption_and_fails_a_mistake_at_once():
    spec = manifests("k8s_grid.yaml")[0]["spec"]
    rules = spec["podFailurePolicy"]["rules"]
    # Preempted or evicted (the DisruptionTarget condition, the kill after SIGTERM's
    # grace), or stopped cleanly on SIGTERM (143): replaced, no retry used, and resumed.
    assert pod_failure_action(rules, 137, ["DisruptionTarget"]) == "Ignore"
    assert pod_failure_action(rules, 143) == "Ignore"
    # Another process took a run's lease over (75): this pod stopped at once so the run is
    # trained once; its replacement goes on with the shard's other runs, no retry used.
    assert pod_failure_action(rules, 75) == "Ignore"
    assert pod_failure_action(rules, 2) == "FailIndex"  # a user's mistake: no retry helps
    assert pod_failure_action(rules, 1) == "Count"  # a crash: one of the retries
    assert spec["podReplacementPolicy"] == "Failed"  # never two pods of one index at once
    container = spec["template"]["spec"]["containers"][0]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    for name in ("k8s_grid.yaml", "k8s_prepare.yaml", "k8s_report.yaml"):
        for doc in manifests(name):
            pod = doc.get("spec", {}).get("template", {}).get("spec", {})
            for box in pod.get("containers", []) + pod.get("initContainers", []):
                assert not box["image"].endswith(":latest") and ":" in box["image"], name
    claims = {doc["metadata"]["name"]: doc["spec"] for doc in manifests("k8s_volumes.yaml")}
    assert set(claims) == {"tfgan-runs", "tfgan-data"}
    assert all(claim["accessModes"] == ["ReadWriteMany"] for claim in claims.values())


def fake_kubectl(tmp_path, pods: str, job_state: str = "Complete"):
    """A kubectl that logs its calls (and the manifests piped to it) and answers with
    ``pods`` (lines 'name phase waiting-reason') and ``job_state`` (a Job condition)."""
    log = tmp_path / "kubectl.log"
    script = tmp_path / "kubectl"
    script.write_text(f"""#!/bin/bash
echo "kubectl $*" >> {log}
case "$1 $2" in
  "create -f"|"apply -f") cat >> {log} ;;
  "get pods") printf '{pods}' ;;
  "get job/"*) echo "{job_state}" ;;
esac
""")
    script.chmod(0o755)
    return log


def run_k8s(tmp_path, **env):
    return subprocess.run(["bash", os.path.join(JOBS, "k8s_run.sh")], capture_output=True,
                          text=True, timeout=60,
                          env=dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}",
                                   POLL_SECONDS="0.05", **env))


def test_k8s_run_sets_the_image_in_one_place_and_returns_once_the_grid_runs(tmp_path):
    log = fake_kubectl(tmp_path, "tfgan-grid-0-x Running \\n")
    result = run_k8s(tmp_path, IMAGE="registry.example.com/tfgan_exp:1.2.3")
    assert result.returncode == 0, result.stderr
    text = log.read_text()
    assert "image: registry.example.com/tfgan_exp:1.2.3" in text
    assert "image: tfgan_exp:0.1.0" not in text  # every manifest got IMAGE
    calls = [line for line in text.splitlines() if line.startswith("kubectl ")]
    assert calls[0] == "kubectl apply -f " + os.path.join(JOBS, "k8s_volumes.yaml")
    assert "--cascade=foreground --wait=true" in calls[1]  # old pods gone first
    assert text.index("name: tfgan-prepare") < text.index("name: tfgan-grid") < text.index(
        "name: tfgan-report")
    assert "writes its report" in result.stdout


@pytest.mark.parametrize("pods, why", [
    ("tfgan-prepare-abc Pending ImagePullBackOff\\n", "a pod cannot start"),
    ("tfgan-prepare-abc Pending \\n", "no pod has started after 1 s")])
def test_k8s_run_fails_fast_on_a_pod_that_cannot_start(tmp_path, pods, why):
    fake_kubectl(tmp_path, pods)
    result = run_k8s(tmp_path, PENDING_SECONDS="1")
    assert result.returncode == 1 and why in result.stderr
    assert "kubectl describe pods -l job-name=tfgan-prepare" in result.stderr


def test_k8s_run_refuses_an_image_without_a_version(tmp_path):
    log = fake_kubectl(tmp_path, "")
    for image in ("tfgan_exp:latest", "registry.example.com/tfgan_exp"):
        result = run_k8s(tmp_path, IMAGE=image)
        assert result.returncode == 2 and "version tag or a digest" in result.stderr
    assert not log.exists()  # nothing was sent to the cluster


@pytest.mark.slow
def test_the_report_job_waits_for_the_grid_job_through_the_api(tmp_path):
    """python -m tfgan_exp.k8s_wait against a stand-in API server that answers the
    Job's status: running twice, then Failed (a grid with failures is still reported)."""
    import http.server
    import json
    import threading
    answers = [[], [{"type": "Suspended", "status": "False"}],
               [{"type": "Failed", "status": "True"}]]
    asked = []

    class Api(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append((self.path, self.headers.get("Authorization")))
            body = json.dumps({"status": {"conditions": answers[min(len(asked) - 1, 2)]}})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = f"http://127.0.0.1:{server.server_port}"
        result = run_command("-m", "tfgan_exp.k8s_wait", "tfgan-grid", f"--api={api}",
                             "--namespace=study", "--poll_seconds=1", timeout=60)
        assert result.returncode == 0, result.stderr
        assert "job tfgan-grid: Failed" in result.stdout and len(asked) == 3
        assert asked[0][0] == "/apis/batch/v1/namespaces/study/jobs/tfgan-grid"
        late = run_command("-m", "tfgan_exp.k8s_wait", "tfgan-grid", f"--api={api}",
                           "--poll_seconds=1", "--timeout_seconds=1", timeout=60)
        assert late.returncode == 0  # it has ended: no wait at all
    finally:
        server.shutdown()
    outside = run_command("-m", "tfgan_exp.k8s_wait", "tfgan-grid",
                          env={"KUBERNETES_SERVICE_HOST": ""})
    assert outside.returncode == 2 and "not inside a Kubernetes pod" in outside.stderr
