#!/bin/bash
# Runs the study on Kubernetes: the volumes (jobs/k8s_volumes.yaml), the data preparation
# Job (jobs/k8s_prepare.yaml) and, once it is complete, the grid's Indexed Job
# (jobs/k8s_grid.yaml) with the report Job (jobs/k8s_report.yaml), which the cluster
# starts when the grid has ended. This script returns once the grid's pods have started:
#   IMAGE=registry.example.com/tfgan_exp:0.1.0 bash jobs/k8s_run.sh
# IMAGE (a tag or a digest, never :latest, so that retried pods run the same code) is set
# here, in one place, for every manifest. A pod that cannot start (its image cannot be
# pulled, a claim cannot be mounted) fails this script within PENDING_SECONDS (default
# 900) instead of leaving it Pending for days; pods queued for GPUs while others of the
# grid run are left to wait.
set -euo pipefail
here=$(dirname "$0")
IMAGE=${IMAGE:-tfgan_exp:0.1.0}
PENDING_SECONDS=${PENDING_SECONDS:-900}
POLL_SECONDS=${POLL_SECONDS:-10}
case "${IMAGE##*/}" in
  *:latest|*:latest@*) echo "IMAGE=$IMAGE: give a version tag or a digest, not latest" >&2
                       exit 2 ;;
  *:*|*@*) ;;
  *) echo "IMAGE=$IMAGE: give a version tag or a digest (name:tag or name@sha256:...)" >&2
     exit 2 ;;
esac

# The manifest with its image set to IMAGE, created (create), or created or updated
# (apply: for manifests holding objects kept between runs, such as the report's account).
with_image() { sed "s|image: tfgan_exp:0.1.0|image: $IMAGE|" "$1"; }
create() { with_image "$1" | kubectl create -f -; }
apply() { with_image "$1" | kubectl apply -f -; }

# Waits until some pod of job $1 runs (or the job has ended already): fails at once on a
# pod whose image cannot be pulled or whose container cannot be created, and after
# PENDING_SECONDS when none has started.
wait_started() {
  local job=$1 deadline=$(( $(date +%s) + PENDING_SECONDS )) pods
  while :; do
    pods=$(kubectl get pods -l "job-name=$job" -o \
      jsonpath='{range .items[*]}{.metadata.name} {.status.phase} {.status.containerStatuses[0].state.waiting.reason}{"\n"}{end}')
    if grep -Eq ' (ErrImagePull|ImagePullBackOff|InvalidImageName|CreateContainerConfigError|CreateContainerError)$' <<<"$pods"; then
      echo "job $job: a pod cannot start:" >&2
      grep -E 'ErrImagePull|ImagePullBackOff|InvalidImageName|CreateContainer' <<<"$pods" >&2
      echo "see kubectl describe pods -l job-name=$job" >&2
      return 1
    fi
    if grep -Eq ' (Running|Succeeded|Failed)( |$)' <<<"$pods"; then
      return 0
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "job $job: no pod has started after $PENDING_SECONDS s (a claim that cannot be" \
        "mounted, or no node with what the pods request); see kubectl describe pods -l" \
        "job-name=$job" >&2
      return 1
    fi
    sleep "$POLL_SECONDS"
  done
}

# Waits until job $1 is Complete (status 0) or Failed (status 1), for at most $2 seconds.
wait_ended() {
  local job=$1 deadline=$(( $(date +%s) + $2 )) conditions
  while [ "$(date +%s)" -lt "$deadline" ]; do
    conditions=$(kubectl get "job/$job" \
      -o jsonpath='{.status.conditions[?(@.status=="True")].type}') || conditions=""
    case " $conditions " in
      *" Complete "*) return 0 ;;
      *" Failed "*) echo "job $job failed: kubectl describe job/$job" >&2; return 1 ;;
    esac
    sleep "$POLL_SECONDS"
  done
  echo "job $job still not done after $2 s" >&2
  return 1
}

kubectl apply -f "$here/k8s_volumes.yaml"
# Jobs of an earlier attempt are replaced once their pods are gone (they may still be
# saving): the runs on the volume then resume or are skipped.
kubectl delete job tfgan-prepare tfgan-grid tfgan-report --ignore-not-found \
  --cascade=foreground --wait=true
create "$here/k8s_prepare.yaml"
wait_started tfgan-prepare
wait_ended tfgan-prepare 14400
create "$here/k8s_grid.yaml"
apply "$here/k8s_report.yaml"
wait_started tfgan-grid
echo "the grid runs; the cluster writes its report to /runs/article/report when it ends" \
  "(kubectl logs -f job/tfgan-report -c wait-for-grid)"
