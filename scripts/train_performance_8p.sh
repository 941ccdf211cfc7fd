#!/usr/bin/env bash
# Reference-compatible launcher, as the Ascend ModelZoo VNet's test/train_performance_8p.sh: throughput on 8 devices of
# this node, one process per device under torchrun.
#
#   bash scripts/train_performance_8p.sh --data_path=/data/LUNA16 [--device_num=8] [--device=npu|cuda|gpu|cpu|auto]
#        [--dist_backend=hccl] [--perf_steps=300] [--output_dir=output] [--split=reference] [--REFERENCE_ARGUMENT=VALUE ...] [-- --key value ...]
#
# The full 8p settings (batch 4 per device, lr 1e-3, lr_decay 0.3, weight decay 1e-5, seed 233, --amp --opt-level O2
# --loss-scale dynamic, 4 workers), but one epoch of --perf_steps iterations per process (default 300) and no
# validation; checkpoints in model_8p_perf/ (the reference's script overwrote the full run's model_8p/).
# Outputs in <output_dir>/0/: train_0.log, train_VNet_bs4_8p_perf_loss.txt, VNet_bs4_8p_perf.log (ActualFPS = median
# samples/s over all processes, data loading excluded; PeakFPS = the maximum, the reference's figure).
set -euo pipefail
# shellcheck source=train_full_1p.sh
source "$(dirname "${BASH_SOURCE[0]}")/train_full_1p.sh"
declare -A REF_ARGS=([seed]=233 [workers]=4 [lr]=1e-3 [lr_decay]=0.3 [weight_decay]=1e-5 [nEpochs]=1
                      [batchSz]=4 [save]=model_8p_perf [opt-level]=O2 [loss-scale]=dynamic)
REF_PROCS=8p REF_CASE=perf REF_DEVICE_NUM=8 REF_PERF_STEPS=300
reference_launch "$@"
