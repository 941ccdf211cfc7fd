#!/usr/bin/env bash
# The starter model: the reference-width V-Net trained on true-scale phantoms for at most an hour on a 2-core CPU
# (bundle/configs/starter.json; its train_time_limit_s stops training in time). The quickstart's five steps with
# more phantoms, a wider network and a longer run: the best model this project makes without real data.
# Usage: bash scripts/starter.sh [OUT]   (default OUT=runs/starter; STARTER_CASES phantoms, default 32)
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE=starter QUICKSTART_CASES="${STARTER_CASES:-32}" exec bash scripts/quickstart.sh "${1:-runs/starter}"
