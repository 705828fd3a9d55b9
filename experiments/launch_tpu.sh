#!/usr/bin/env bash
# Launch one training config on every worker of a TPU pod slice (the same command everywhere;
# jax.distributed.initialize() discovers the coordinator on TPU VMs).
#
#   experiments/launch_tpu.sh TPU_NAME ZONE configs/mahdpo_math.py:paper gs://BUCKET/runs/mah \
#       --config.model.name=/mnt/ckpt/qwen2.5-7b-instruct --config.data.files=accuracy:...,engagement:...
#
# Check the layout first without a pod:
#   python -m mtalign_jax.dryrun --config configs/mahdpo_math.py:paper --devices 64
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [--config.x=y ...]" >&2
  exit 2
fi
TPU=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
CMD="cd ~/mtalign_jax && MTALIGN_DISTRIBUTED=auto .venv/bin/python -m mtalign_jax.train \
  --config $CONFIG --workdir $WORKDIR $*"
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "$CMD"
