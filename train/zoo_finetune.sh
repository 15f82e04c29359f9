#!/usr/bin/env bash
# Builds FaceScope's embedded zoo (zoo/checkpoints/): the InsightFace MobileFaceNet y1 imported
# unchanged (the reference), and every method fine-tuned from it with one recipe
# (train/configs/finetune.toml; NPCFace: finetune-npcface.toml; blur-augmented baseline and
# SCAN: finetune-blur.toml) on YuNet-aligned FaceScope-small, then evaluated on LFW View 1,
# CFP-FF and CFP-FP, clean, blurred (sigma 2, 4 px) and at 28 px, and published with cards.
#
#   bash train/zoo_finetune.sh          # resumable: finished runs are skipped, killed ones resume
#   bash train/zoo_finetune.sh NAME...  # only these zoo models, one after another
#   bash train/zoo_finetune.sh --seeds 1 2   # the baseline retrained with these run.seed values
#                                            # (the zoo's is 0), evaluated alike, kept out of the zoo
#   bash train/zoo_finetune.sh --seeds 1 2 --models NAME...   # these zoo models instead
#
# Two streams of one CPU thread each (faster than one stream of two on a 2-core machine);
# SRANet's attention makes it the slowest, so it shares its stream with the light models.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=cache/packed/facescope-small-train-yunet.npz
[ -f "$DATA" ] || python -m train.prepare --dataset facescope-small-train --aligner yunet --out "$DATA"
if [ ! -d zoo/checkpoints/mobilefacenet.y1 ]; then
  python -m zoo import ../shared/pretrained/insightface-mobilefacenet-y1 --arch mobilefacenet \
    --out zoo/checkpoints/mobilefacenet.y1 \
    --licence "InsightFace states its pretrained models are for non-commercial research only; MS-Celeb-1M is a research-only set" \
    --note "InsightFace 'model-y1-test2' MobileFaceNet, trained by InsightFace on MS1M (MS-Celeb-1M, cleaned); published LFW 99.50. Files as committed in liguiyuan/mobilefacenet-ncnn @ 43631161, models/."
fi
# Clean and blurred on all three protocols; low resolution (28 px) on LFW View 1 only, which
# keeps a model's evaluation at about 7 CPU-minutes (bench/method_vs_baseline.py reads eval.json).
mkdir -p runs
evaluate() {  # NAME [MODEL]: evaluate a local zoo model (or MODEL, a checkpoint folder) into
              # runs/NAME/eval{,-lowres}.json (skipped when done)
  local run=(python -m zoo.evaluate --model "${2:-$1}" --aligner yunet --quiet)
  [ -f "runs/$1/eval-lowres.json" ] || OMP_NUM_THREADS=1 "${run[@]}" --protocol lfw-view1 --blur "" --lowres 28 \
    --out "runs/$1/eval-lowres.json"
  [ -f "runs/$1/eval.json" ] || OMP_NUM_THREADS=1 "${run[@]}" --protocol lfw-view1,cfp-ff,cfp-fp --blur 0,2,4 --pairs \
    --out "runs/$1/eval.json"
}
EVALS() { echo --eval "runs/$1/eval.json" --eval "runs/$1/eval-lowres.json"; }
train() {  # NAME RECIPE MODEL: fine-tune, publish into the local zoo, evaluate, publish with the numbers
  local name=$1 recipe=$2 model=$3
  if [ ! -f "runs/$name/eval.json" ]; then
    python -m train.run "$recipe" --data "$DATA" --out "runs/$name" --resume --set "model.name='$model'" \
      ${EXTRA[$name]:-} --threads 1 --no-progress > "runs/$name.out" 2>&1
    python -m train.publish "runs/$name" --local "$name" --force
    evaluate "$name"
  fi
  python -m train.publish "runs/$name" --local "$name" $(EVALS "$name") --force
}
declare -A RECIPE=([mobilefacenet.fss-ft]=finetune [scan-mobilefacenet.fss-ft]=finetune
  [sranet-mobilefacenet.fss-ft]=finetune [arface-mobilefacenet.fss-ft]=finetune [hpda-mobilefacenet.fss-ft]=finetune
  [mobilefacenet.fss-ft-npcface]=finetune-npcface [mobilefacenet.fss-ft-blur]=finetune-blur
  [scan-mobilefacenet.fss-ft-blur]=finetune-blur)
# HPDA's bilinear projections at 256 (the paper leaves d open; 512 made a 9 MiB checkpoint, over
# the zoo's few-MB budget, for 128-d MobileFaceNet features).
declare -A EXTRA=([hpda-mobilefacenet.fss-ft]="--set model.hbp_dim=256")
stream() {  # NAME...: train, evaluate and publish these models one after another
  for name in "$@"; do
    if [ "$name" = mobilefacenet.y1 ]; then mkdir -p runs/$name && evaluate $name; continue; fi
    [ -n "${RECIPE[$name]:-}" ] || { echo "unknown zoo model $name; known: ${!RECIPE[*]} mobilefacenet.y1" >&2; exit 2; }
    train "$name" "${RECIPE[$name]}" "${name%%.*}"
  done
}
seed() {  # SEED NAME: zoo model NAME retrained with run.seed SEED into runs/NAME-seedSEED/checkpoint and
          # evaluated alike (bench/method_vs_baseline.py sets how far the seed alone moves it)
  local name=$2-seed$1
  if [ ! -f "runs/$name/checkpoint/model.safetensors" ]; then
    python -m train.run "${RECIPE[$2]}" --data "$DATA" --out "runs/$name" --resume --set "model.name='${2%%.*}'" \
      --set run.seed=$1 ${EXTRA[$2]:-} --threads 1 --no-progress > "runs/$name.out" 2>&1
    python -m train.publish "runs/$name" --out "runs/$name/checkpoint" --force
  fi
  evaluate "$name" "runs/$name/checkpoint"
}
if [ "${1:-}" = --seeds ]; then  # --seeds SEED... [--models NAME...]
  shift; seeds=(); models=()
  while [ $# -gt 0 ] && [ "$1" != --models ]; do seeds+=("$1"); shift; done
  [ $# -gt 0 ] && shift && models=("$@")
  [ ${#models[@]} -gt 0 ] || models=(mobilefacenet.fss-ft)
  for name in "${models[@]}"; do
    [ -n "${RECIPE[$name]:-}" ] || { echo "unknown fine-tuned zoo model $name; known: ${!RECIPE[*]}" >&2; exit 2; }
  done
  for name in "${models[@]}"; do for s in "${seeds[@]}"; do seed "$s" "$name"; done; done
  exit
fi
if [ $# -gt 0 ]; then stream "$@"; exit; fi   # bash train/zoo_finetune.sh NAME...: just these
stream mobilefacenet.y1 sranet-mobilefacenet.fss-ft mobilefacenet.fss-ft-npcface hpda-mobilefacenet.fss-ft &
stream mobilefacenet.fss-ft scan-mobilefacenet.fss-ft arface-mobilefacenet.fss-ft mobilefacenet.fss-ft-blur \
  scan-mobilefacenet.fss-ft-blur &
wait
python -m train.publish zoo/checkpoints/mobilefacenet.y1 --local mobilefacenet.y1 $(EVALS mobilefacenet.y1) --force
python bench/method_vs_baseline.py
