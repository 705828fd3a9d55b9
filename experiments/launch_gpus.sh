#!/usr/bin/env bash
# Multi-GPU / multi-node recipe: one process per host (JAX uses all local GPUs of a process).
# Run this same script on every host with its own PROCESS_ID (0..NUM_PROCESSES-1):
#
#   COORD=host0:12355 NUM_PROCESSES=2 PROCESS_ID=0 experiments/launch_gpus.sh \
#       configs/mahdpo_hv.py:paper /shared/runs/hv --config.mesh.shape="(1,-1,1)"
#
# Re-running the same command resumes from the workdir's last checkpoint.
set -euo pipefail
CONFIG=$1; WORKDIR=$2; shift 2
MTALIGN_COORDINATOR=${COORD:?set COORD=host:port} \
MTALIGN_NUM_PROCESSES=${NUM_PROCESSES:?} MTALIGN_PROCESS_ID=${PROCESS_ID:?} \
  .venv/bin/python -m mtalign_jax.train --config "$CONFIG" --workdir "$WORKDIR" "$@"
