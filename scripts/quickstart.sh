#!/usr/bin/env bash
# The main job on built-in data, end to end, on a CPU in a few minutes:
# synthetic LUNA16 -> train (quick overlay) -> evaluate on held-out cases -> export TorchScript -> segment a CT with it.
# Usage: bash scripts/quickstart.sh [OUT]   (default OUT=runs/quickstart; data goes to OUT/data)
# RECIPE=starter (scripts/starter.sh) runs the same steps with bundle/configs/starter.json.
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")/.."
RECIPE="${RECIPE:-quick}"
[ -f "bundle/configs/$RECIPE.json" ] || { echo "error: RECIPE=$RECIPE: bundle/configs/$RECIPE.json not found" >&2; exit 2; }
OUT="${1:-runs/quickstart}"
DATA="$OUT/data"
CASES="${QUICKSTART_CASES:-16}"
EPOCHS_ARG=()
[ -n "${QUICKSTART_EPOCHS:-}" ] && EPOCHS_ARG=(--epochs "$QUICKSTART_EPOCHS")
TRAIN="['bundle/configs/train.json','bundle/configs/$RECIPE.json']"
EVAL="['bundle/configs/train.json','bundle/configs/$RECIPE.json','bundle/configs/evaluate.json']"
INFER="['bundle/configs/inference.json','bundle/configs/$RECIPE.json']"
start=$(date +%s)

echo "== 1/5 synthetic LUNA16: $CASES cases -> $DATA"
python -m pipeline synth "$DATA" --cases "$CASES" --seed 0

echo "== 2/5 train (bundle/configs/$RECIPE.json overlay) -> $OUT/models"
python -m monai.bundle run training --config_file "$TRAIN" --dataset_dir "$DATA" --bundle_root "$OUT" \
    "${EPOCHS_ARG[@]}" > "$OUT/train.log" 2>&1 || { tail -n 30 "$OUT/train.log"; exit 1; }
grep -E "val_mean_dice" "$OUT/train.log" | sed 's/^.* - INFO - /   /'

echo "== 3/5 evaluate models/model.pt on the held-out cases -> $OUT/eval"
python -m monai.bundle run training --config_file "$EVAL" --dataset_dir "$DATA" --bundle_root "$OUT" \
    > "$OUT/evaluate.log" 2>&1 || { tail -n 30 "$OUT/evaluate.log"; exit 1; }

echo "== 4/5 export TorchScript (the configs ride inside it) -> $OUT/models/model.ts"
python -m pipeline export ckpt_export network_def --filepath "$OUT/models/model.ts" --ckpt_file "$OUT/models/model.pt" \
    --meta_file bundle/configs/metadata.json --config_file "$INFER" --bundle_root "$OUT" \
    > "$OUT/export.log" 2>&1 || { tail -n 30 "$OUT/export.log"; exit 1; }

echo "== 5/5 segment a held-out CT with model.ts at its own settings (mask, QC picture, volumes, report) -> $OUT/segmentation"
# the first case of the evaluation's per-case CSV: a validation case of the run's own split (synth writes the
# reference's layout, lung_ct_image/<uid>.mhd)
UID_HELD_OUT=$(awk -F, 'NR == 2 {print $1}' "$OUT/eval/metrics_per_case.csv")
CT="$DATA/lung_ct_image/$UID_HELD_OUT.mhd"
[ -f "$CT" ] || { echo "error: held-out CT '$CT' not found (from $OUT/eval/metrics_per_case.csv)" >&2; exit 1; }
python -m pipeline segment "$CT" --out "$OUT/segmentation" --model "$OUT/models/model.ts" --no-progress \
    > "$OUT/segment.log" 2>&1 || { tail -n 30 "$OUT/segment.log"; exit 1; }

python - "$OUT" "$(( $(date +%s) - start ))" <<'PY'
import json, sys
out, secs = sys.argv[1], int(sys.argv[2])
s = json.load(open(f"{out}/eval/metrics_summary.json"))
print(f"""
done in {secs // 60} min {secs % 60} s. Where everything went:
  data            {out}/data                 (synthetic LUNA16: lung_ct_image/, seg-lungs-LUNA16/)
  weights         {out}/models/model.pt      (best epoch; plain state dict)
  checkpoints     {out}/models/vnet_checkpoint.pth.tar, vnet_model_best.pth.tar
  TorchScript     {out}/models/model.ts
  evaluation      {out}/eval/metrics_per_case.csv, metrics_summary.json
  TensorBoard     {out}/eval/tensorboard
  segmentation    {out}/segmentation/      (mask in the CT's geometry, QC picture, lung_stats.csv, report.html)
  logs            {out}/train.log, evaluate.log, segment.log, export.log
held-out synthetic cases: {int(s['cases'])}, mean Dice {s['mean_dice']:.4f}, voxel error {s['mean_error_rate_pct']:.3f} %, HD95 {s['mean_hd95_mm']:.1f} mm

segment your own CTs with this model (a file, a DICOM folder, or a folder of them; model.ts carries its settings):
  python -m pipeline segment YOUR_CT --out masks/ --model {out}/models/model.ts""")
PY
