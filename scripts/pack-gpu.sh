#!/usr/bin/env bash
# Packs everything a GPU machine needs to test petal, since that machine has
# no Rust toolchain: the release `ddpm` binary, every test executable of the
# workspace, and `run.sh`, which runs them all with the CUDA libraries on the
# library path and prints a pass/fail report.
#
#   scripts/pack-gpu.sh          # writes gpu-pack/
#   (on the GPU machine)  gpu-pack/run.sh
#
# Binaries are stripped of debug info to keep the pack small (the device
# tool carries at most 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."

PACK=gpu-pack
rm -rf "$PACK"
mkdir -p "$PACK/tests"

echo "== building ddpm (release)"
cargo build --release -p ddpm --bin ddpm
cp target/release/ddpm "$PACK/ddpm"

echo "== building test executables (release)"
# `--message-format=json` reports each test binary's path in "executable".
cargo test --release --workspace --no-run --message-format=json \
    | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    exe = msg.get("executable")
    if msg.get("reason") == "compiler-artifact" and exe and msg.get("profile", {}).get("test"):
        print(exe)
' > "$PACK/.executables"

# Only the executables whose tests touch the GPU travel (the rest would push
# the pack past the 64 MiB a GPU machine is sent); PACK_ALL=1 packs all.
while read -r exe; do
    case "${PACK_ALL:-0}:$(basename "$exe")" in
        1:*|*:tensor-*|*:cuda-*|*:cuda_half_gemm-*|*:mixed_precision-*|*:unet_parity-*|*:train_resume-*|*:doctor-*) cp "$exe" "$PACK/tests/" ;;
    esac
done < "$PACK/.executables"
rm "$PACK/.executables"

if command -v strip > /dev/null; then
    strip "$PACK/ddpm" "$PACK"/tests/*
fi

# What the GPU tests and the comparison need beside the binaries: the
# PyTorch parity fixtures and the PyTorch reference benchmark.
if [ -d ../shared/fixtures/tiny ]; then
    cp -r ../shared/fixtures/tiny "$PACK/fixtures"
fi
cp scripts/torch_unet_bench.py "$PACK/"
# PACK_DATA=1 adds half of the Oxford Flowers 102 training classes (64x64
# copies, ~13 MB) and the validation split, for `run.sh train`.
FLOWERS=../shared/data/flowers102
if [ "${PACK_DATA:-0}" = 1 ] && [ -d "$FLOWERS/train" ]; then
    mkdir -p "$PACK/data/train"
    for class in $(seq 1 51); do cp -r "$FLOWERS/train/$class" "$PACK/data/train/"; done
    cp -r "$FLOWERS/valid" "$PACK/data/valid"
fi

cat > "$PACK/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs `ddpm doctor` and the kernel compile test for every architecture
# first, then petal's GPU tests, then `ddpm bench --device cuda` beside the
# PyTorch eager reference on the same GPU, and prints a short report.
#   run.sh            GPU tests and benchmarks
#   run.sh tests      GPU tests only        run.sh bench    benchmarks only
#   run.sh profile    per-kernel time of a training step (PETAL_CUDA_PROFILE=1)
#   run.sh train      a short bf16 run on the flowers packed with PACK_DATA=1
# PRESET=flowers64 BATCH=32 STEPS=10 set the benchmark.
set -uo pipefail
cd "$(dirname "$0")"
what=${1:-all}
export LD_LIBRARY_PATH="/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# GPU tests fail instead of skipping when the device cannot be opened.
export PETAL_REQUIRE_CUDA=1
[ -d fixtures ] && export PETAL_FIXTURES="$PWD/fixtures"
PRESET=${PRESET:-flowers64}; BATCH=${BATCH:-32}; STEPS=${STEPS:-10}
mkdir -p logs

echo "== GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi failed"
ls "${LD_LIBRARY_PATH%%:*}" | grep -i nvrtc || echo "no libnvrtc found"
python3 -m pip show nvidia-cuda-nvrtc nvidia-cublas 2>/dev/null | grep -E "^(Name|Version)"

report=()
failed=0
record() { # name rc seconds log
    if [ "$2" -eq 0 ]; then report+=("PASS  $1 ($3 s)"); else report+=("FAIL  $1 (exit $2, $3 s; see $4)"); failed=1; fi
}

# First what says whether the rest can work at all: the setup as petal sees
# it, then (with the tests) every kernel module compiled to a cubin for each
# of sm_75 ... sm_120.
echo "== ddpm doctor"
start=$(date +%s)
timeout 120 ./ddpm doctor > logs/doctor.log 2>&1
record doctor $? $(( $(date +%s) - start )) logs/doctor.log
cat logs/doctor.log
arch_test=cuda::tests::nvrtc_compiles_every_kernel_for_every_arch

if [ "$what" = all ] || [ "$what" = tests ]; then
    echo "== kernels compile for every architecture"
    start=$(date +%s)
    timeout 300 ./tests/tensor-* "$arch_test" --exact --nocapture > logs/arch-compile.log 2>&1
    record arch-compile $? $(( $(date +%s) - start )) logs/arch-compile.log
    grep -E "^(NVRTC|sm_)|test result|panicked" logs/arch-compile.log
    for t in tests/*; do
        name=$(basename "$t")
        echo "== $name"
        skip=()
        case "$name" in tensor-*) skip=(--skip "$arch_test") ;; esac
        start=$(date +%s)
        timeout 240 "./$t" ${skip[@]+"${skip[@]}"} > "logs/$name.log" 2>&1
        rc=$?
        grep -E "^test .*(FAILED|ok)$|SKIPPED|panicked|test result" "logs/$name.log" | grep -v " ok$" | tail -n 30
        record "$name" $rc $(( $(date +%s) - start )) "logs/$name.log"
    done
    # The opt-in kernels (implicit-GEMM convolutions, fused GroupNorm +
    # SiLU) through the existing CUDA and U-Net tests, so they can become the
    # default once these pass.
    for t in tests/cuda-* tests/unet_parity-*; do
        [ -e "$t" ] || continue
        name=opt-in-$(basename "$t")
        echo "== $name (PETAL_CUDA_CONV=implicit PETAL_CUDA_FUSED_NORM=1)"
        start=$(date +%s)
        PETAL_CUDA_CONV=implicit PETAL_CUDA_FUSED_NORM=1 timeout 240 "./$t" > "logs/$name.log" 2>&1
        rc=$?
        grep -E "^test .*(FAILED|ok)$|SKIPPED|panicked|test result" "logs/$name.log" | grep -v " ok$" | tail -n 30
        record "$name" $rc $(( $(date +%s) - start )) "logs/$name.log"
    done
fi

bench() { # label command...
    local label=$PRESET-$1; shift
    echo "== $label"
    local start=$(date +%s)
    timeout 150 "$@" > "logs/$label.json" 2> "logs/$label.err"
    local rc=$?
    cat "logs/$label.json"; tail -n 15 "logs/$label.err"
    record "$label" $rc $(( $(date +%s) - start )) "logs/$label.err"
}

if [ "$what" = all ] || [ "$what" = bench ]; then
    common=(--preset "$PRESET" --batch "$BATCH" --steps "$STEPS")
    bench petal-f32 ./ddpm bench "${common[@]}" --device cuda --json
    bench torch-f32 python3 torch_unet_bench.py "${common[@]}" --tf32 off
    bench petal-f32-tf32 ./ddpm bench "${common[@]}" --device cuda --tf32 --json
    bench torch-f32-default python3 torch_unet_bench.py "${common[@]}" --tf32 default
    bench petal-bf16 ./ddpm bench "${common[@]}" --device cuda --precision bf16 --json
    bench torch-bf16 python3 torch_unet_bench.py "${common[@]}" --precision bf16
    bench petal-f16 ./ddpm bench "${common[@]}" --device cuda --precision f16 --json
fi

# A short real training run on the packed flowers (PACK_DATA=1): bf16,
# stopped halfway and resumed, then the held-out loss of its EMA weights and
# a 1000-step DDPM sample grid: run.sh train
if [ "$what" = train ] && [ -d data/train ]; then
    steps=${TRAIN_STEPS:-2000}
    run=runs/flowers64-gpu
    rm -rf "$run"
    start=$(date +%s)
    timeout 200 ./ddpm train --data data/train --preset flowers64 --steps "$steps" --stop-at $((steps / 2)) \
        --device cuda --precision bf16 --out "$run" > logs/train.log 2>&1 \
    && timeout 200 ./ddpm train --resume --steps "$steps" --device cuda --precision bf16 --out "$run" >> logs/train.log 2>&1
    record train $? $(( $(date +%s) - start )) logs/train.log
    tail -n 4 logs/train.log
    timeout 60 ./ddpm loss --checkpoint "$run/last.safetensors" --data data/valid --device cuda --json > logs/heldout.json 2>&1
    record heldout-loss $? 0 logs/heldout.json
    cat logs/heldout.json
    start=$(date +%s)
    timeout 60 ./ddpm sample --checkpoint "$run/last.safetensors" --sampler ddpm --n 16 --seed 0 --device cuda \
        --out logs/samples-ddpm.png > logs/sample.log 2>&1
    record sample-ddpm $? $(( $(date +%s) - start )) logs/sample.log
    cp "$run/loss.png" "$run/loss.csv" logs/ 2>/dev/null
fi

# Where a step's time goes (see tensor/src/cuda/profile.rs): run.sh profile
if [ "$what" = profile ]; then
    common=(--preset "$PRESET" --batch "$BATCH" --steps 3)
    for variant in "f32" "f32 --tf32" "bf16"; do
        set -- $variant
        label="profile-$1${2:+-tf32}"
        echo "== $label"
        PETAL_CUDA_PROFILE=1 timeout 120 ./ddpm bench "${common[@]}" --device cuda --precision $1 ${2:-} > "logs/$label.txt" 2>&1
        record "$label" $? 0 "logs/$label.txt"
        head -n 45 "logs/$label.txt"
    done
fi

echo
echo "================ report ================"
printf '%s\n' "${report[@]}"
if [ -n "${OUT:-}" ]; then tar czf "$OUT/logs.tgz" logs; fi
exit $failed
RUN
chmod +x "$PACK/run.sh"

echo "== packed:"
du -sh "$PACK" "$PACK/ddpm" "$PACK"/tests/*
