#!/usr/bin/env bash
# Lightning's FSDPStrategy across nodes:
#   sbatch --export=MODEL=out/dinov3-7b,DATA=data/mine,OUT=runs/pl examples/slurm_lightning_fsdp.sh
#SBATCH --job-name=vitzoo-lightning-fsdp
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
set -euo pipefail
# One task per GPU: Lightning reads the ranks from Slurm's environment and starts no processes itself.
srun python examples/train_lightning_fsdp.py --devices 8 --num-nodes "$SLURM_NNODES" \
    --model "$MODEL" --data "$DATA" --output-dir "$OUT"
