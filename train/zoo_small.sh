#!/usr/bin/env bash
# Trains, evaluates and publishes FaceScope's first zoo, six width-0.25 models trained from scratch
# on FaceScope-small (58-78% on LFW), into runs/zoo-small/ ($FACESCOPE_ZOO when set): never into the
# embedded zoo (zoo/checkpoints/, built by train/zoo_finetune.sh). Serve or evaluate them with
# FACESCOPE_ZOO=runs/zoo-small (e.g. python app.py --zoo runs/zoo-small).
#
# One recipe for every model: width 0.25, GDC head, ArcFace s=32 m=0.5 (NPCFace for the NPCFace
# model), SGD lr 0.1 (40 warm-up steps, /10 after epoch 1), batch 32, 400 steps (~1.1 epochs of
# 11,235 faces): what two CPU cores finish in about an hour, two streams of one thread each.
# On a GPU raise optim.epochs / run.max_steps; everything else stays.
#
#   bash train/zoo_small.sh            # prepare data if needed, train, evaluate, publish
set -euo pipefail
cd "$(dirname "$0")/.."
export FACESCOPE_ZOO=${FACESCOPE_ZOO:-$PWD/runs/zoo-small}  # zoo.LOCAL_ZOO reads it: keeps zoo/checkpoints/ untouched
mkdir -p "$FACESCOPE_ZOO"
DATA=cache/packed/facescope-small-train.npz
[ -f "$DATA" ] || python -m train.prepare --dataset facescope-small-train --out "$DATA" --workers 2

COMMON=(--set model.width=0.25 --set "loss.s=32.0" --set optim.batch_size=32 --set optim.lr=0.1
        --set optim.warmup_steps=40 --set "optim.milestones=[1]" --set optim.epochs=2 --set run.max_steps=400
        --set run.checkpoint_every=50 --set run.log_every=10 --threads 1 --no-progress)
train() {  # NAME RECIPE [extra overrides...]: train, then publish into the local zoo with its numbers
  local name=$1 recipe=$2; shift 2
  python -m train.run "$recipe" --data "$DATA" --out "runs/$name" --resume "${COMMON[@]}" "$@" > "runs/$name.out" 2>&1
  publish "$name"
}
publish() {  # NAME: the finished run becomes $FACESCOPE_ZOO/NAME, evaluated clean and blurred
  local name=$1
  python -m train.publish "runs/$name" --local "$name" --force
  OMP_NUM_THREADS=1 python -m zoo.evaluate --model "$name" --protocol lfw-view1,cfp-ff,cfp-fp --blur 0,2,4 \
    --out "runs/$name/eval.json" --quiet
  python -m train.publish "runs/$name" --local "$name" --eval "runs/$name/eval.json" --force
}
mkdir -p runs
# SRANet's spatial attention at 56x56 makes it ~5x slower than the rest: it gets a stream to itself.
train sranet-ir18.fss-scratch sranet --set "model.name='sranet-ir18'" --set "model.head='gdc'" &
(
  train ir18.fss-scratch baseline --set "model.name='ir18'" --set "model.head='gdc'"
  train scan-ir18.fss-scratch scan --set "model.name='scan-ir18'" --set "model.head='gdc'"
  train ir18.fss-scratch-npcface npcface --set "model.name='ir18'" --set "model.head='gdc'"
  train hpda-mobilefacenet.fss-scratch hpda --set "model.name='hpda-mobilefacenet'" --set model.hbp_dim=128
  train arface-ir18.fss-scratch arface --set "model.name='arface-ir18'" --set "model.head='gdc'" --set "loss.name='arcface'" --set loss.m=0.5
) &
wait
