#!/usr/bin/env bash
# Issue 7's GPU figures and the CUDA paths, in one run on a lent GPU machine (PyTorch installed,
# no package registry). Wheels of SimpleITK and monai may travel in .whl/ (pip download ...).
# Usage: bash benchmarks/gpu_checks.sh [RESULTS_DIR]   (default benchmarks/results)
set -u
results=${1:-benchmarks/results}
mkdir -p "$results"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/masam-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/masam-site
fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"

step() { echo "== $1"; shift; "$@"; echo "== exit $?"; }
# the CUDA paths of the command line: train (fp32, fp16 + GradScaler, bf16 + checkpointing), predict
step "demo" timeout 80 python3 -m masam demo -o /tmp/masam-demo --device cuda --iterations 200
common=(-d /tmp/masam-demo/dataset --arch vit_tiny --image-size 64 --iterations 20 --batch-size 4
        --val-every 0 --val-fraction 0 --workers 1 --device cuda --quiet)
step "train fp16" timeout 40 python3 -m masam train -o /tmp/masam-fp16 --precision fp16 "${common[@]}"
step "train bf16 ckpt" timeout 40 python3 -m masam train -o /tmp/masam-bf16 --precision bf16 --grad-checkpoint "${common[@]}"
step "predict bf16 fast" timeout 40 python3 -m masam predict -m /tmp/masam-fp16 -i /tmp/masam-demo/dataset/imagesTs \
    -o /tmp/masam-pred --device cuda --precision bf16 --mode fast --quiet
# goal 5: one training step, batch 3 stacks of 5 at 512, per encoder size and setting
step "training step" timeout 280 python3 benchmarks/training_step.py --device cuda --archs vit_b vit_l vit_h \
    --batch-size 3 --settings bf16-ckpt bf16 fp16-original --steps 4 --out "$results/training_step_gpu.json"
# goals 3 and 4 on the GPU: time per volume by mode, slice count and image size
step "volume scaling" timeout 100 python3 benchmarks/volume_scaling.py --device cuda --precision bf16 \
    --modes faithful fast --slices 50 100 200 --slice-size 512 --size-slices 50 --batch-size 8 \
    --out "$results/volume_scaling_gpu.json"
