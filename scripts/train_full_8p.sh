#!/usr/bin/env bash
# Reference-compatible launcher, as the Ascend ModelZoo VNet's test/train_full_8p.sh: full training on 8 devices of
# this node, one process per device under torchrun (DDP; backend hccl on NPU, nccl on CUDA, gloo on CPU).
#
#   bash scripts/train_full_8p.sh --data_path=/data/LUNA16 [--device_num=8] [--device=npu|cuda|gpu|cpu|auto]
#        [--dist_backend=hccl] [--output_dir=output] [--split=reference] [--REFERENCE_ARGUMENT=VALUE ...] [-- --bundle_key value ...]
#
# Settings (the reference's PyTorch 1.8 launch script): batch 4 per device, lr 1e-3, lr_decay 0.3 at epochs 50 and
# 100, weight decay 1e-5, 200 epochs, seed 233 (process r uses 233 + r), --amp --opt-level O2 --loss-scale dynamic,
# 4 workers, checkpoints in model_8p/. Change any with the reference's name (--nEpochs=1 --batchSz=2 ...).
# Outputs in <output_dir>/0/ (the reference logs 8p runs under device 0): train_0.log, train_VNet_bs4_8p_acc_loss.txt
# (rank 0's loss per iteration), VNet_bs4_8p_acc.log (summary; FPS counts all processes); checkpoints written by
# rank 0 only. Several nodes: run torchrun yourself (see the README, "Devices").
set -euo pipefail
# shellcheck source=train_full_1p.sh
source "$(dirname "${BASH_SOURCE[0]}")/train_full_1p.sh"
declare -A REF_ARGS=([seed]=233 [workers]=4 [lr]=1e-3 [lr_decay]=0.3 [weight_decay]=1e-5 [nEpochs]=200
                      [batchSz]=4 [save]=model_8p [opt-level]=O2 [loss-scale]=dynamic)
REF_PROCS=8p REF_CASE=acc REF_DEVICE_NUM=8
reference_launch "$@"
