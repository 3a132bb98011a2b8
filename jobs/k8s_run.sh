#!/bin/bash
# Runs the study on Kubernetes: the data preparation Job (jobs/k8s_prepare.yaml), then
# the grid's Indexed Job (jobs/k8s_grid.yaml), then the report Job (k8s_report.yaml).
#   bash jobs/k8s_run.sh [TIMEOUT_SECONDS]      (for the grid; default 72 hours)
set -euo pipefail
here=$(dirname "$0")

# Waits until job $1 is Complete (status 0) or Failed (status 1), for at most $2 seconds:
# `kubectl wait --for=condition=complete` alone would wait out its timeout on a failure.
wait_for() {
  local job=$1 deadline=$(( $(date +%s) + $2 )) conditions
  while [ "$(date +%s)" -lt "$deadline" ]; do
    conditions=$(kubectl get "job/$job" \
      -o jsonpath='{.status.conditions[?(@.status=="True")].type}') || conditions=""
    case " $conditions " in
      *" Complete "*) return 0 ;;
      *" Failed "*) echo "job $job failed: kubectl describe job/$job" >&2; return 1 ;;
    esac
    sleep 30
  done
  echo "job $job still not done after $2 s" >&2
  return 1
}

# Jobs of an earlier attempt are replaced (the runs on the volume resume or are skipped).
kubectl delete job tfgan-prepare tfgan-grid tfgan-report --ignore-not-found
kubectl create -f "$here/k8s_prepare.yaml"
wait_for tfgan-prepare 14400
kubectl create -f "$here/k8s_grid.yaml"
# A grid in which some runs failed is still reported: the report lists what finished.
wait_for tfgan-grid "${1:-259200}" || echo "reporting the runs that finished" >&2
kubectl create -f "$here/k8s_report.yaml"
wait_for tfgan-report 3600
echo "report written to /runs/article/report on the runs volume"
