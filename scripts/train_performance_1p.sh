#!/usr/bin/env bash
# Reference-compatible launcher, as the Ascend ModelZoo VNet's test/train_performance_1p.sh: throughput on ONE device.
#
#   bash scripts/train_performance_1p.sh --data_path=/data/LUNA16 [--device_id=0] [--device=npu|cuda|gpu|cpu|auto]
#        [--perf_steps=300] [--output_dir=output] [--split=reference] [--REFERENCE_ARGUMENT=VALUE ...] [-- --bundle_key value ...]
#
# The full 1p settings (batch 8, lr 1e-4, seed 49, --amp --opt-level O2 --loss-scale 128, 4 workers), but one
# epoch of --perf_steps training iterations (default 300) and no validation; checkpoints in model_1p_perf/.
# Outputs in <output_dir>/<device_id>/: train_<device_id>.log, train_VNet_bs8_1p_perf_loss.txt and
# VNet_bs8_1p_perf.log, whose ActualFPS is the median samples/s over the iterations (data loading excluded, the
# first 2 left out as warm-up) and PeakFPS the maximum (what the reference reported).
set -euo pipefail
# shellcheck source=train_full_1p.sh
source "$(dirname "${BASH_SOURCE[0]}")/train_full_1p.sh"
declare -A REF_ARGS=([seed]=49 [workers]=4 [lr]=1e-4 [lr_decay]=1 [weight_decay]=1e-8 [nEpochs]=1
                      [batchSz]=8 [save]=model_1p_perf [opt-level]=O2 [loss-scale]=128)
REF_PROCS=1p REF_CASE=perf REF_PERF_STEPS=300
reference_launch "$@"
