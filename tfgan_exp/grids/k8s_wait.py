"""Wait, inside a Kubernetes pod, for a Job to end: ``python -m tfgan_exp.k8s_wait JOB``.

The report Job (``jobs/k8s_report.yaml``) runs this first, so that the cluster starts
the report once the grid's Job is Complete or Failed (a grid with failed runs is still
reported), and no loop on the user's machine waits days for it. It asks the API server
for the Job's conditions every ``--poll_seconds``, with the pod's service account (its
token and CA certificate, mounted by Kubernetes); exit status 0 when the Job has ended,
1 after ``--timeout_seconds``, 2 for a mistake. Kubernetes has no dependency between Jobs,
and the ``kubernetes`` client library would add a large dependency for one GET, so the
request is made here with the standard library.
"""
import json
import os
import ssl
import sys
import time
import urllib.request

from absl import flags

from tfgan_exp.command_line import fail, run_command

ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"  # where Kubernetes mounts it
F = flags.FLAGS
flags.DEFINE_string("api", "", "API server URL; default: the cluster's own "
                    "(https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT).")
flags.DEFINE_string("namespace", "", "The Job's namespace; default: the pod's own.")
flags.DEFINE_integer("poll_seconds", 60, "Seconds between two questions, >= 1.")
flags.DEFINE_integer("timeout_seconds", 30 * 24 * 3600, "Give up (status 1) after this "
                     "many seconds, >= 1.")


def _read(path: str, default: str = "") -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def job_state(api: str, namespace: str, job: str, token: str = "",
              context: ssl.SSLContext = None) -> str:
    """'Complete', 'Failed', or '' while the Job runs: its conditions that are True."""
    request = urllib.request.Request(f"{api}/apis/batch/v1/namespaces/{namespace}/jobs/{job}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30, context=context) as response:
        status = json.load(response).get("status", {})
    ended = {c.get("type") for c in status.get("conditions", []) if c.get("status") == "True"}
    return next((state for state in ("Complete", "Failed") if state in ended), "")


def wait(api: str, namespace: str, job: str, poll_seconds: float, timeout_seconds: float,
         token: str = "", context: ssl.SSLContext = None) -> bool:
    """Polls until the Job has ended (True) or the time is up (False). A question that
    fails (the API server restarting) is asked again at the next poll."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            state = job_state(api, namespace, job, token, context)
            if state:
                print(f"job {job}: {state}", flush=True)
                return True
        except (OSError, ValueError) as error:  # URLError is an OSError
            print(f"job {job}: cannot ask the API server yet ({error})", flush=True)
        if time.monotonic() + poll_seconds > deadline:
            return False
        time.sleep(poll_seconds)


def main(argv):
    if len(argv) != 2:
        fail("give exactly one JOB name")
    if F.poll_seconds < 1 or F.timeout_seconds < 1:
        fail("--poll_seconds and --timeout_seconds must be at least 1")
    api = F.api or "https://{}:{}".format(os.environ.get("KUBERNETES_SERVICE_HOST", ""),
                                          os.environ.get("KUBERNETES_SERVICE_PORT", "443"))
    if api.startswith("https://:"):
        fail("not inside a Kubernetes pod (KUBERNETES_SERVICE_HOST is unset); give --api")
    namespace = F.namespace or _read(os.path.join(ACCOUNT, "namespace"), "default")
    ca = os.path.join(ACCOUNT, "ca.crt")
    context = ssl.create_default_context(cafile=ca) if os.path.exists(ca) else None
    token = _read(os.path.join(ACCOUNT, "token"))
    if not wait(api, namespace, argv[1], F.poll_seconds, F.timeout_seconds, token, context):
        print(f"job {argv[1]} has not ended after {F.timeout_seconds} s", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run_command(main)
