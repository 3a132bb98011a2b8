#!/bin/bash
# Starts the grid Job (jobs/k8s_grid.yaml), waits for it, then the report Job.
#   bash jobs/k8s_run.sh [TIMEOUT]      (default 72h)
set -euo pipefail
here=$(dirname "$0")
kubectl create -f "$here/k8s_grid.yaml"
kubectl wait --for=condition=complete --timeout="${1:-72h}" job/tfgan-grid
kubectl create -f "$here/k8s_report.yaml"
kubectl wait --for=condition=complete --timeout=1h job/tfgan-report
echo "report written to /runs/article/report on the runs volume"
