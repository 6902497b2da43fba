#!/usr/bin/env bash
# FSDP2 across nodes: sbatch --export=MODEL=out/dinov3-7b,DATA=data/mine,OUT=runs/fsdp examples/accelerate/slurm_fsdp2.sh
#SBATCH --job-name=vitzoo-fsdp2
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
set -euo pipefail
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
# One launcher per node; each starts 8 processes. The config's num_machines/num_processes are overridden here.
srun bash -c "accelerate launch --config_file examples/accelerate/fsdp2.yaml \
    --num_machines $SLURM_NNODES --num_processes $((SLURM_NNODES * 8)) --machine_rank \$SLURM_NODEID \
    --main_process_ip $head_node --main_process_port 29500 \
    examples/train_fsdp.py --model $MODEL --data $DATA --output-dir $OUT"
