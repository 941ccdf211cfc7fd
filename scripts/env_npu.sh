# Ascend CANN environment for the reference-style launchers (the reference's test/env_npu.sh, trimmed to what current
# CANN / torch_npu read). Sourced by scripts/train_*.sh only with --device=npu; source it yourself otherwise:
#   source scripts/env_npu.sh
# Every variable keeps a value you exported before. Nothing here fails when CANN is absent.

# CANN libraries: ASCEND_HOME_PATH, ASCEND_OPP_PATH, LD_LIBRARY_PATH ... (first set_env.sh found)
for _vnet_cann_env in "${CANN_SET_ENV:-}" \
    "${ASCEND_TOOLKIT_HOME:-/usr/local/Ascend/ascend-toolkit}/set_env.sh" \
    /usr/local/Ascend/ascend-toolkit/latest/set_env.sh \
    "${HOME:-/root}/Ascend/ascend-toolkit/set_env.sh"; do
    if [ -n "$_vnet_cann_env" ] && [ -f "$_vnet_cann_env" ]; then
        # shellcheck disable=SC1090
        source "$_vnet_cann_env"
        break
    fi
done
unset _vnet_cann_env

export ASCEND_GLOBAL_LOG_LEVEL="${ASCEND_GLOBAL_LOG_LEVEL:-3}"          # 3 = errors only in CANN logs
export ASCEND_SLOG_PRINT_TO_STDOUT="${ASCEND_SLOG_PRINT_TO_STDOUT:-0}"  # CANN logs to files, not the training log
export TASK_QUEUE_ENABLE="${TASK_QUEUE_ENABLE:-1}"                      # torch_npu asynchronous operator dispatch
export HCCL_CONNECT_TIMEOUT="${HCCL_CONNECT_TIMEOUT:-1200}"             # s; 8 devices can take long to link (default 120)
export HCCL_WHITELIST_DISABLE="${HCCL_WHITELIST_DISABLE:-1}"            # as the reference: no HCCL IP whitelist
