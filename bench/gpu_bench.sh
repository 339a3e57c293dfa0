#!/usr/bin/env bash
# GPU benchmarks of issue 6.5 in ONE call, on a machine with an NVIDIA GPU and no network.
#
#   1. installs the Python packages the machine lacks from bench/wheelhouse (build it beforehand with
#      bench/make_wheelhouse.sh where PyPI is reachable; it travels with the tree);
#   2. runs bench/train_throughput.py (item 1: the real scripts/train.py path vs the compute limit, with
#      and without per-epoch evaluation) and bench/explain_cost.py (item 3) with ViT-B/16 at 224 px in
#      bf16 autocast, reporting samples/s, achieved TFLOP/s and MFU against the H100 bf16 dense peak
#      (989 TFLOP/s; FLOPs from the formula in bench/common.py:vit_forward_flops, x3 for training);
#   3. leaves BENCHMARKS.gpu.md, the raw JSON and a log in $OUT (default /tmp/bps_gpu_bench), to be
#      pasted into BENCHMARKS.md.
#
# With the project's device tool (one start; about 4-5 minutes of the 15):
#   run(command="bash bench/gpu_bench.sh", carry=["bench/wheelhouse"], timeout_s=540)
# Smoke test of the script itself on a CPU (tiny sizes, no MFU):
#   GPU_BENCH_DEVICE=cpu GPU_BENCH_SMOKE=1 bash bench/gpu_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/bps_gpu_bench}
DEVICE=${GPU_BENCH_DEVICE:-cuda}
WHEELHOUSE=${WHEELHOUSE:-bench/wheelhouse}
mkdir -p "$OUT"
export BPS_BENCH_DIR=${BPS_BENCH_DIR:-/tmp/bps_bench_gpu}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MPLBACKEND=Agg TOKENIZERS_PARALLELISM=false
exec > >(tee -a "$OUT/gpu_bench.log") 2>&1
echo "== $(date -u +%FT%TZ) gpu_bench.sh on $(hostname)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true

# ---- 1. missing packages, from the wheelhouse only (the machine has no network) -----------------
missing=$("$PY" - <<'EOF'
import importlib.util
# import name -> pip name; transformers must be 5.x (the project's API), torch is never installed here
wanted = {"datasets": "datasets", "evaluate": "evaluate", "shap": "shap", "tifffile": "tifffile",
          "cv2": "opencv-python-headless", "sklearn": "scikit-learn", "accelerate": "accelerate",
          "transformers": "transformers", "safetensors": "safetensors", "yaml": "pyyaml",
          "matplotlib": "matplotlib", "requests": "requests", "tqdm": "tqdm", "imagecodecs": "imagecodecs"}
missing = [pip for mod, pip in wanted.items() if importlib.util.find_spec(mod) is None]
try:
    import transformers
    if int(transformers.__version__.split(".")[0]) < 5:
        missing.append("transformers>=5,<6")
except ImportError:
    pass
print(" ".join(dict.fromkeys(missing)))
EOF
)
if [ -n "$missing" ]; then
    echo "== installing from $WHEELHOUSE: $missing"
    if [ ! -d "$WHEELHOUSE" ]; then
        echo "error: $missing missing and no $WHEELHOUSE. Build it where PyPI is reachable:" >&2
        echo "  bash bench/make_wheelhouse.sh <device python version> $missing" >&2
        exit 3
    fi
    "$PY" -m pip install --quiet --no-index --find-links "$WHEELHOUSE" $missing
fi
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)"
if [ "$DEVICE" = cuda ]; then
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'error: no CUDA device visible')"
fi

# ---- 2. the benchmarks ------------------------------------------------------------------------------
CONFIG=bench/vit_b16_224.json
if [ -n "${GPU_BENCH_SMOKE:-}" ]; then  # sizes for a CPU smoke test of this script
    TRAIN="--quick --batch-size 8 --eval-batch-size 16 --max-train-samples 16 --max-eval-samples 16 --num-images 400"
    EXPLAIN="--quick --batch-size 2 --shap-max-evals 20 --shap-batch-size 10 --repeats 1 --num-images 400"
    DTYPE=""
else
    TRAIN="--batch-size 64 --eval-batch-size 256 --dataloader-num-workers 8 --num-images 2400 --max-train-samples 1280 --epochs 3"
    EXPLAIN="--batch-size 8 --shap-max-evals 500,2000 --shap-images 2 --repeats 6 --num-images 2400"
    DTYPE="--bf16"
fi
"$PY" bench/train_throughput.py --config "$CONFIG" $DTYPE --device "$DEVICE" $TRAIN \
    --settings cached-noeval,cached-eval --section gpu-train \
    --title "GPU: training throughput vs compute limit, ViT-B/16 224 px bf16" --output "$OUT/BENCHMARKS.gpu.md"
"$PY" bench/eval_throughput.py --config "$CONFIG" $DTYPE --device "$DEVICE" --no-predict-base --predict-images 512 \
    --section gpu-predict --title "GPU: prediction from TIFF files vs pure forward, ViT-B/16 224 px (bf16 with --bf16)" \
    --output "$OUT/BENCHMARKS.gpu.md" ${GPU_BENCH_SMOKE:+--quick}
"$PY" bench/explain_cost.py --config "$CONFIG" $DTYPE --device "$DEVICE" $EXPLAIN --section gpu-explain \
    --title "GPU: explanation cost, ViT-B/16 224 px bf16" --output "$OUT/BENCHMARKS.gpu.md"

# ---- 3. results -------------------------------------------------------------------------------------
cp "$BPS_BENCH_DIR"/*.json "$OUT"/ 2>/dev/null || true
echo "== done: $OUT/BENCHMARKS.gpu.md"
