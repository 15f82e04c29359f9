#!/usr/bin/env bash
# The GPU check of training (bench/gpu.py): every recipe in bf16 and with amp off, the 85k- and
# 2M-class heads replicated and sharded (PartialFC), IR-50 images/s, a world-size-1 NCCL group and
# zoo models on the device. Needs only this repository (the faces are synthetic, made on the
# device); sized for under 8 minutes on one GPU. Writes bench/results/gpu.{json,md}; exits 1 if a check fails.
#
#   bash bench/gpu.sh          # on a GPU
#   bash bench/gpu.sh --cpu    # the same checks at toy sizes on the CPU (the tests run this)
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m bench.gpu "$@"   # as a module: the repository root is on the path, installed or not
