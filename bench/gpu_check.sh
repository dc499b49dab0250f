#!/bin/sh
# One prepared GPU check for a session whose task has a device machine (about 8 minutes on one
# H100/H200): read-only NVML/MIG queries, then FlashBoot's CUDA benchmark, T1 on 4 KiB pages and
# on a huge-page tmpfs.  Nothing here changes MIG settings or resets the GPU.
#
# The device image has torch, safetensors and numpy but not msgspec; carry its wheel.  Here, once:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl msgspec==0.22.0
# Then, with the device tool:  run(command="sh bench/gpu_check.sh", carry=[".whl"], timeout_s=600)
# Figures come back in $OUT (mig.txt, flashboot-4k.txt, flashboot-huge.txt).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,pcie.link.gen.current,pcie.link.width.current,mig.mode.current --format=csv
timeout 60 python3 bench/mig_readonly.py --all > "$OUT/mig.txt" 2>&1
tail -30 "$OUT/mig.txt"
# 8 GiB keeps the whole run inside one call; --size-gib 15 is the Llama-8B size when time allows.
timeout 330 python3 bench/flashboot.py --device cuda --size-gib 8 --reps 3 --keep \
    --dir /tmp/fb --shm /dev/shm/fb-4k > "$OUT/flashboot-4k.txt" 2>&1
tail -45 "$OUT/flashboot-4k.txt"
timeout 150 python3 bench/flashboot.py --device cuda --size-gib 8 --reps 3 --dir /tmp/fb \
    --shm /dev/shm/fb-huge --mount-huge \
    --methods "flashboot T1,flashboot T1 register,flashboot T1 ring,flashboot out/in" \
    > "$OUT/flashboot-huge.txt" 2>&1
tail -25 "$OUT/flashboot-huge.txt"
