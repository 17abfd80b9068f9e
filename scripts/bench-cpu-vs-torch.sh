#!/bin/bash
# Interleaved CPU benchmark rounds: one or more petal binaries against
# PyTorch (2 threads: NCHW, channels-last, and channels-last on huge
# pages), training at batch 32 (8 for flowers160) and sampling at batch 16,
# each command under `flock /tmp/bench.lock` so no two timed runs share the
# cores. Read the medians: a noisy machine moves single runs by 10 to 30%.
#
#   scripts/bench-cpu-vs-torch.sh ROUNDS "PRESETS" PETAL_CMD [PETAL_CMD ...]
#   e.g. scripts/bench-cpu-vs-torch.sh 3 "tiny cpu32" target/release/ddpm "env PETAL_WINOGRAD=1 target/release/ddpm"
set -u
rounds=$1 presets=$2; shift 2
torch="python3 scripts/torch_unet_bench.py --device cpu --threads 2"
run() { echo "## $*"; flock /tmp/bench.lock "$@" 2>&1 | grep -v -i warn | tail -n 2; }
for _ in $(seq "$rounds"); do
    for preset in $presets; do
        steps=6; [ "$preset" = tiny ] || [ "$preset" = cpu32 ] || steps=3
        # flowers160 is measured at batch 8: its step peaks at 6.25 GiB there,
        # and batch 32 holds four times the activations.
        batch=32; [ "$preset" = flowers160 ] && batch=8
        for petal in "$@"; do
            run $petal bench --preset "$preset" --batch $batch --steps $steps --device cpu
        done
        run $torch --preset "$preset" --batch $batch --steps $steps
        run $torch --preset "$preset" --batch $batch --steps $steps --channels-last
        # PyTorch on huge pages as well (its own allocator's switch and
        # glibc's), since petal's binaries ask for them.
        run env THP_MEM_ALLOC_ENABLE=1 GLIBC_TUNABLES=glibc.malloc.hugetlb=1 $torch --preset "$preset" --batch $batch --steps $steps --channels-last
    done
done
