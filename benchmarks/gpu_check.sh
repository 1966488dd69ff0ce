#!/usr/bin/env bash
# On a machine with a CUDA GPU: the `cuda` tests, then cnnlab's training speed on the
# GPU in each precision (fp32, bf16, fp16: --precision) for presets 2, 4 and 9 (two
# epochs of 60,000 images, the second timed, with the per-epoch evaluation) and
# preset 1 (20 steady-state steps). Takes under 15 minutes.
#
#     python3 -m pip install -e ".[test]" && bash benchmarks/gpu_check.sh
#
# Exits 2 when torch sees no GPU, 1 when a test fails.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: torch sees no CUDA GPU (torch.cuda.is_available() is False);" \
         "install a CUDA build of torch on a machine with a GPU" >&2
    exit 2
fi
python3 -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda)"

python3 -m pytest -q -m cuda tests/training/test_cuda.py tests/training/test_rng.py tests/training/test_precision.py

report() {  # one JSON line from stacks.py -> one readable line
    python3 -c 'import json, sys
r = json.loads(sys.stdin.read().strip().splitlines()[-1])
acc = r.get("test_acc")
acc = f", test acc {100 * acc:.1f}%" if acc is not None else ""
preset, mode, rate = r["preset"], r["mode"], r["samples_per_s"]
precision = r.get("precision", "fp32")
print(f"preset {preset} {precision}: {rate:,.0f} samples/s ({mode}){acc}")'
}
for precision in fp32 bf16 fp16; do
    for preset in 2 4 9; do
        python3 benchmarks/stacks.py --stack cnnlab --preset "$preset" --mode epochs \
            --epochs 2 --device cuda --precision "$precision" | report
    done
    python3 benchmarks/stacks.py --stack cnnlab --preset 1 --mode steps --steps 20 \
        --device cuda --precision "$precision" | report
done
