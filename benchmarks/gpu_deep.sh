#!/usr/bin/env bash
# One short GPU session (< 10 minutes): one generation of the DDPM and WGAN-GP paper presets on the 60 000
# Fashion-MNIST training images, every stage timed. Writes benchmarks/results/gpu_deep/.
#   ddpm:  the paper DDPM (T = 500, U-Net 64/128/256, 20 epochs of batch 256) fitted on 60 000 images,
#          10 000 samples at λ = 1, LeNet-FID / precision / recall against the 10 000 test images
#   wgan:  the paper WGAN-GP (widths 256/128/64, 50 epochs of batch 50, 5 critic steps per generator step),
#          the same sizes and metrics
#   stages: data, LeNet training (cold cache: trained in this run), init, a one-epoch probe (compile and
#          epoch time), fit, sampling, evaluation (benchmarks/gpu_deep.py)
# Cuts: none at the paper sizes unless a budget says so. A model's fit runs the preset's epochs when the
#   probed epoch time x epochs fits in 100 s, else as many epochs as fit (the JSON records epochs_run
#   and cut); its 10 000 samples are cut to whole sampler chunks when they would take more than 60 s.
#   Pass --no-cut for the paper sizes whatever they cost, --fit-budget-s / --sample-budget-s to move
#   the budgets.
# Data: the four IDX files in $FASHION_MNIST_DIR (default /usr/share/datasets/fashion-mnist, Debian's
#   dataset-fashion-mnist); a missing file stops the script in one line before any work.
# Extra arguments go to gpu_deep.py:
#   benchmarks/gpu_deep.sh --dry-run                                          # the plan only
#   benchmarks/gpu_deep.sh --preset smoke --data-dir tests/data/fashion-mnist  # every path on a CPU, ~2 min
set -euo pipefail
out=${OUT_DIR:-benchmarks/results/gpu_deep}
data_dir=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
mkdir -p "$out"
python -c "import jax; print(jax.devices())" | tee "$out/devices.txt"
# A cold cache of its own: the LeNet is trained and every function compiled in this run, and timed as such.
MADJAX_CACHE=$(mktemp -d)
export MADJAX_CACHE
trap 'rm -rf "$MADJAX_CACHE"' EXIT
/usr/bin/time -f "gpu_deep %e s" timeout 590 python benchmarks/gpu_deep.py --data-dir "$data_dir" \
    --out "$out/deep.json" "$@" 2>&1 | tee "$out/deep.txt"
