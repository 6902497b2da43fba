#!/usr/bin/env bash
# Trainer with DeepSpeed ZeRO or FSDP2 (ENGINE=zero3|zero2|fsdp2; ZERO_INIT=1: ZeRO-3 loads the model partitioned,
# for a folder whose head has the data's classes) across nodes:
#   sbatch --export=MODEL=out/dinov3-7b,DATA=data/mine,OUT=runs/zero3,ENGINE=zero3,ZERO_INIT=1 \
#       examples/accelerate/slurm_trainer_sharded.sh
#SBATCH --job-name=vitzoo-trainer-sharded
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
set -euo pipefail
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
engine=${ENGINE:-zero3}
zero_init=${ZERO_INIT:+--zero-init}
# One launcher per node; each starts 8 processes. Trainer selects the engine from its own arguments (fsdp_config,
# or examples/deepspeed/<engine>.json), so accelerate is launched without a config file.
srun bash -c "accelerate launch --multi_gpu \
    --num_machines $SLURM_NNODES --num_processes $((SLURM_NNODES * 8)) --machine_rank \$SLURM_NODEID \
    --main_process_ip $head_node --main_process_port 29500 \
    examples/train_trainer_sharded.py --engine $engine $zero_init --model $MODEL --data $DATA --output-dir $OUT"
