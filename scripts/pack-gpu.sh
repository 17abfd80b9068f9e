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

while read -r exe; do
    cp "$exe" "$PACK/tests/"
done < "$PACK/.executables"
rm "$PACK/.executables"

if command -v strip > /dev/null; then
    strip --strip-debug "$PACK/ddpm" "$PACK"/tests/*
fi

cat > "$PACK/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs petal's tests and a short benchmark on a GPU machine.
set -uo pipefail
cd "$(dirname "$0")"
export LD_LIBRARY_PATH="/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# GPU tests fail instead of skipping when the device cannot be opened.
export PETAL_REQUIRE_CUDA=1
mkdir -p logs

echo "== nvidia-smi"
nvidia-smi || echo "nvidia-smi failed"
echo "== NVRTC libraries (expect 13.0.x)"
ls "${LD_LIBRARY_PATH%%:*}" | grep -i nvrtc || echo "no libnvrtc found"

report=()
failed=0
for t in tests/*; do
    name=$(basename "$t")
    echo "== $name"
    start=$(date +%s)
    "./$t" > "logs/$name.log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    tail -n 25 "logs/$name.log"
    if [ $rc -eq 0 ]; then
        report+=("PASS  $name (${secs}s)")
    else
        report+=("FAIL  $name (exit $rc, ${secs}s; see logs/$name.log)")
        failed=1
    fi
done

echo "== ddpm bench"
./ddpm bench --preset flowers64 --batch 32 --steps 10 --device cuda --json > logs/bench.json 2> logs/bench.err
rc=$?
cat logs/bench.json
tail -n 25 logs/bench.err
if [ $rc -eq 0 ]; then
    report+=("PASS  ddpm bench")
else
    report+=("FAIL  ddpm bench (exit $rc; see logs/bench.err)")
    failed=1
fi

for precision in bf16 f16; do
    echo "== ddpm bench --precision $precision"
    ./ddpm bench --preset flowers64 --batch 32 --steps 10 --device cuda --precision $precision --json > logs/bench-$precision.json 2> logs/bench-$precision.err
    rc=$?
    cat logs/bench-$precision.json
    tail -n 25 logs/bench-$precision.err
    if [ $rc -eq 0 ]; then
        report+=("PASS  ddpm bench --precision $precision")
    else
        report+=("FAIL  ddpm bench --precision $precision (exit $rc; see logs/bench-$precision.err)")
        failed=1
    fi
done

echo
echo "================ report ================"
printf '%s\n' "${report[@]}"
exit $failed
RUN
chmod +x "$PACK/run.sh"

echo "== packed:"
du -sh "$PACK" "$PACK/ddpm" "$PACK"/tests/*
