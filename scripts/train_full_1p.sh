#!/usr/bin/env bash
# Reference-compatible launcher, as the Ascend ModelZoo VNet's test/train_full_1p.sh: full training on ONE device.
#
#   bash scripts/train_full_1p.sh --data_path=/data/LUNA16 [--device_id=0] [--device=npu|cuda|gpu|cpu|auto]
#        [--output_dir=output] [--split=reference] [--REFERENCE_ARGUMENT=VALUE ...] [-- --bundle_key value ...]
#
# Settings (the reference's launch script): batch 8, lr 1e-4, lr_decay 1, 200 epochs, seed 49, --amp --opt-level O2
# --loss-scale 128, weight decay 1e-8, 4 workers, checkpoints in model_1p/. The reference's script passes --lr=1e-4 and
# then --lr=1, so it trained at lr 1.0; here lr is 1e-4. Change any of them with the reference's name:
# --nEpochs=1 --batchSz=4 --lr=1e-3 --seed= --lr_decay= --weight_decay= --workers= --save= --opt-level= --loss-scale=.
# --device defaults to npu (as the reference); --split=reference (default: the reference's 134 test scans against every
# other LUNA16 scan) | subsets | hash; anything after "--" is passed to the bundle as overrides.
#
# Outputs, where the reference puts them (relative to the current folder):
#   <output_dir>/<device_id>/train_<device_id>.log          everything printed (this script tees into it)
#   <output_dir>/<device_id>/train_VNet_bs8_1p_acc_loss.txt  one training loss per iteration
#   <output_dir>/<device_id>/VNet_bs8_1p_acc.log             summary: ActualFPS (median), PeakFPS, TrainingTime,
#                                                            FinalValError, ActualLoss, E2ETrainingTime ...
#   <save>/vnet_checkpoint.pth.tar, <save>/vnet_model_best.pth.tar, <save>/model.pt
#
# The other launchers (train_full_8p.sh, train_performance_*.sh) source this file for reference_launch().
set -euo pipefail

SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPTS_DIR/.." && pwd)"

launcher_die() {
    echo "error: $(basename "$0"): $*" >&2
    exit 2
}

# reference_launch ARGS...: parse the reference-style command line and run `python -m pipeline train`, teeing its output.
# Set before calling: REF_ARGS (associative array of reference arguments -> defaults), REF_PROCS (1p | 8p),
# REF_CASE (acc | perf); for 8p REF_DEVICE_NUM; for perf REF_PERF_STEPS (training iterations measured).
reference_launch() {
    local data_path="" device="npu" device_id="0" device_num="${REF_DEVICE_NUM:-1}" output_dir="output"
    local dist_backend="" perf_steps="${REF_PERF_STEPS:-0}" split="reference" key value
    local known="--data_path= --device= --output_dir= --split="
    if [[ $REF_PROCS == 8p ]]; then known+=" --device_num= --dist_backend="; else known+=" --device_id="; fi
    [[ $REF_CASE != perf ]] || known+=" --perf_steps="
    known+="$(printf ' --%s=' "${!REF_ARGS[@]}")"
    local -a passthrough=()
    while (($#)); do
        case "$1" in
            --) shift; passthrough=("$@"); break ;;
            -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
            --data_path=*) data_path="${1#*=}" ;;
            --device=*) device="${1#*=}" ;;
            --output_dir=*) output_dir="${1#*=}" ;;
            --split=*) split="${1#*=}" ;;
            --device_id=*)
                [[ $REF_PROCS == 1p ]] || launcher_die "--device_id is for 1-device scripts; the 8p scripts use devices 0..N-1 (--device_num=N)"
                device_id="${1#*=}" ;;
            --device_num=*)
                [[ $REF_PROCS == 8p ]] || launcher_die "--device_num is for the 8p scripts; this one trains on one device (--device_id=N)"
                device_num="${1#*=}" ;;
            --dist_backend=*)
                [[ $REF_PROCS == 8p ]] || launcher_die "--dist_backend is for the 8p scripts"
                dist_backend="${1#*=}" ;;
            --perf_steps=*)
                [[ $REF_CASE == perf ]] || launcher_die "--perf_steps is for the performance scripts"
                perf_steps="${1#*=}" ;;
            --*=*)
                key="${1%%=*}"; key="${key#--}"; value="${1#*=}"
                [[ -v "REF_ARGS[$key]" ]] || launcher_die "unknown argument '$1' (known: $known; bundle overrides go after '--')"
                REF_ARGS[$key]="$value" ;;
            *) launcher_die "unknown argument '$1' (arguments are --name=value; bundle overrides go after '--')" ;;
        esac
        shift
    done
    [[ -n $data_path ]] || launcher_die "--data_path=<LUNA16 root> is required"
    [[ $device_id =~ ^[0-9]+$ ]] || launcher_die "--device_id must be a device index (0, 1, ...), got '$device_id'"
    [[ $device_num =~ ^[1-9][0-9]*$ ]] || launcher_die "--device_num must be a positive integer, got '$device_num'"
    [[ $REF_CASE != perf || $perf_steps =~ ^[1-9][0-9]*$ ]] || launcher_die "--perf_steps must be a positive integer, got '$perf_steps'"
    [[ ${REF_ARGS[nEpochs]} =~ ^[1-9][0-9]*$ ]] || launcher_die "--nEpochs must be a positive integer, got '${REF_ARGS[nEpochs]}'"

    local nproc=1 log_id="$device_id"
    if [[ $REF_PROCS == 8p ]]; then nproc="$device_num"; log_id=0; fi  # the reference logs 8p runs under device 0
    local case_name="VNet_bs${REF_ARGS[batchSz]}_${nproc}p_${REF_CASE}"
    local out="$output_dir/$log_id"
    local log="$out/train_${log_id}.log"
    mkdir -p "$out"
    rm -f "$log" "$out/train_${case_name}_loss.txt" "$out/${case_name}.log"  # this case's files from an earlier run

    if [[ $device == npu && -f $SCRIPTS_DIR/env_npu.sh ]]; then
        set +u  # CANN's set_env.sh reads unset variables
        # shellcheck disable=SC1091
        source "$SCRIPTS_DIR/env_npu.sh"
        set -u
    fi
    export PYTHONPATH="$REPO_DIR${PYTHONPATH:+:$PYTHONPATH}"
    export VNET_RUN_START="${VNET_RUN_START:-$(date +%s)}"  # E2ETrainingTime counts from here

    local -a cmd=("${PYTHON:-python3}" -m pipeline train --data "$data_path" --device "$device" --split "$split")
    for key in seed workers lr lr_decay weight_decay nEpochs batchSz save; do
        cmd+=("--$key" "${REF_ARGS[$key]}")
    done
    cmd+=(--amp --opt-level "${REF_ARGS[opt-level]}")
    [[ ${REF_ARGS[opt-level]} == O0 ]] || cmd+=(--loss-scale "${REF_ARGS[loss-scale]}")
    if [[ $REF_PROCS == 8p ]]; then
        cmd+=(--distributed --device_num "$nproc")
        [[ -z $dist_backend ]] || cmd+=(--dist_backend "$dist_backend")
    else
        cmd+=(--device_id "$device_id")
    fi
    cmd+=(-- --reference_log_dir "$out" --case_name "$case_name")
    if [[ $REF_CASE == perf ]]; then  # a few hundred iterations, no validation: FPS only
        cmd+=("--train#trainer#epoch_length" "$perf_steps" --val_interval "$((REF_ARGS[nEpochs] + 1))")
    fi
    cmd+=("${passthrough[@]}")

    echo "$(basename "$0"): $case_name on $device, logs in $out" | tee "$log"
    printf '%q ' "${cmd[@]}" | tee -a "$log"
    echo | tee -a "$log"
    local rc=0
    "${cmd[@]}" 2>&1 | tee -a "$log" || rc=${PIPESTATUS[0]}
    if ((rc != 0)); then
        echo "error: training failed (exit status $rc); see $log" | tee -a "$log" >&2
        exit "$rc"
    fi
    if [[ -f $out/${case_name}.log ]]; then
        echo "------------------ Final result ------------------" | tee -a "$log"
        tee -a "$log" < "$out/${case_name}.log"
    fi
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    declare -A REF_ARGS=([seed]=49 [workers]=4 [lr]=1e-4 [lr_decay]=1 [weight_decay]=1e-8 [nEpochs]=200
                          [batchSz]=8 [save]=model_1p [opt-level]=O2 [loss-scale]=128)
    REF_PROCS=1p REF_CASE=acc
    reference_launch "$@"
fi
