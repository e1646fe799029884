#!/usr/bin/env bash
# GPU checks in one short run (about 6 minutes on one H100):
#   1. exactness on CUDA: cached engine vs full-window recompute, greedy and seeded sampling;
#      then the CUDA-graph path vs the eager engine (benchmarks/gpu_graphs.py exactness: same
#      tokens, generators handed back, padded buckets), with capture time and memory;
#   2. generation speed at the benchmark cases: reference vs eager engine vs static step vs
#      CUDA graphs, then the same in bf16 autocast;
#   3. finetune throughput, fp32 vs bf16 AMP (Kronos-small-sized predictor, base-sized tokenizer);
#   4. a torchrun finetune on CUDA (one process: no process group, so no NCCL traffic);
#   5. torchrun walk-forward scoring with NCCL (tiny model, one process per GPU), checked
#      against a one-process run on the same GPU;
#   6. a 5,000-name universe (16 paths, ctx 120 / pred 5, Kronos-small-sized random weights)
#      through forecast_panel with memory-sized batches: eager vs CUDA graphs, fp32 and bf16
#      (benchmarks/gpu_graphs.py universe).
# Where no CUDA device exists it says so and exits 0. Output: stdout, and $OUT (default
# gpu_check_out/) gets one log per step. STEPS="1 5" runs a subset.
#   bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-gpu_check_out}
STEPS=${STEPS:-1 2 3 4 5 6}
want() { [[ " $STEPS " == *" $1 "* ]]; }
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA device visible to $PY: nothing measured (run this on a GPU machine)"
  exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
status=0

if want 1; then
echo "== 1. exactness on CUDA (cached engine vs full recompute)"
"$PY" - <<'EOF' 2>&1 | tee "$OUT/exactness.log" || status=1
import torch
from kronos_quant.config import preset_configs
from kronos_quant.generation import SamplingParams, generate
from kronos_quant.model import Kronos
from kronos_quant.testing import random_init_, recompute_generate
from kronos_quant.tokenizer import KronosTokenizer

dev = torch.device("cuda")
torch.backends.cuda.matmul.allow_tf32 = False  # exactness is checked in true fp32
torch.backends.cudnn.allow_tf32 = False
tok_cfg, model_cfg = preset_configs("mini")
tok, model = KronosTokenizer.from_config(tok_cfg), Kronos.from_config(model_cfg)
random_init_(tok, 0, scale=0.2), random_init_(model, 1, scale=0.2)
tok, model = tok.to(dev).eval(), model.to(dev).eval()
g = torch.Generator().manual_seed(0)
x = torch.randn(3, 60, 6, generator=g).to(dev)  # (B, L, 6) normalised bars
stamps = torch.randint(0, 7, (3, 60 + 40, 5), generator=g).float().to(dev)
cases = [("greedy", SamplingParams(T=1.0, top_k=1, top_p=1.0, sample_count=2)),
         ("sampled", SamplingParams(T=1.0, top_k=0, top_p=0.9, sample_count=4))]
for name, sampling in cases:
    for max_context in (128, 80):  # 80 < 60 + 40: the window slides
        kw = dict(pred_len=40, max_context=max_context, sampling=sampling)
        ref = recompute_generate(model, tok, x, stamps[:, :60], stamps[:, 60:], **kw,
                                 generator=torch.Generator(dev).manual_seed(7))
        out = generate(model, tok, x, stamps[:, :60], stamps[:, 60:], **kw,
                       generator=torch.Generator(dev).manual_seed(7)).bars
        diff = (out - ref).abs().max().item()
        # A different sampled token moves a decoded bar by O(0.1); float reordering by ~1e-6.
        verdict = "same tokens" if diff < 1e-4 else "MISMATCH"
        print(f"{name:8s} max_context {max_context:3d}: max |engine - recompute| = {diff:.3g}"
              f" ({verdict})")
        if verdict == "MISMATCH":
            raise SystemExit(1)
EOF
"$PY" benchmarks/gpu_graphs.py exactness 2>&1 | tee "$OUT/graphs_exactness.log" || status=1
fi

if want 2; then
echo "== 2. generation speed (Kronos-small-sized random weights)"
"$PY" benchmarks/bench_generate.py --device cuda --cases ctx400,universe --repeats 3 \
  --steps static,graphs --skip-effect --skip-demo 2>&1 | tee "$OUT/generate_fp32.log" || status=1
"$PY" benchmarks/bench_generate.py --device cuda --amp bf16 --cases ctx400,universe --repeats 3 \
  --steps static,graphs --skip-reference --skip-effect --skip-demo 2>&1 \
  | tee "$OUT/generate_bf16.log" || status=1
fi

if want 3; then
echo "== 3. finetune throughput (fp32 vs bf16 AMP)"
"$PY" benchmarks/bench_finetune.py --device cuda --preset small --amp none,bf16 --steps 30 \
  2>&1 | tee "$OUT/finetune.log" || status=1
fi

work=$(mktemp -d)
"$PY" - "$work" <<'EOF' 2>&1 | tee "$OUT/setup.log" || status=1
import sys
from pathlib import Path
from kronos_quant.data import synthetic_panel
from kronos_quant.testing import save_tiny_pair
root = Path(sys.argv[1])
synthetic_panel(8, 400, seed=1).reset_index().to_csv(root / "panel.csv", index=False)
save_tiny_pair(root / "pair")
EOF
if want 4; then
echo "== 4. torchrun finetune on CUDA (one process)"
"$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m kronos_quant.cli --quiet finetune predictor \
  --data "$work/panel.csv" --tokenizer "$work/pair/tokenizer" --init "$work/pair/model" \
  --out "$work/run" --lookback 32 --pred-len 4 --batch-size 16 --max-steps 20 --device cuda --set log_every=5 \
  --set tensorboard=false 2>&1 | tee -a "$OUT/nccl.log" || status=1
"$PY" - "$work/run" <<'EOF' 2>&1 | tee -a "$OUT/nccl.log" || status=1
import sys
from kronos_quant.finetune import read_metrics
rows = read_metrics(sys.argv[1])
steps = [r for r in rows if r.get("kind") == "step"]
print(f"torchrun finetune: step records up to step {steps[-1]['step']}, last train loss "
      f"{steps[-1]['loss']:.4f}" if steps else "torchrun finetune: no step metrics written")
EOF
fi

if want 5; then
echo "== 5. torchrun scoring with NCCL (tiny model) vs one process"
score=(--quiet score --model "$work/pair/model" --tokenizer "$work/pair/tokenizer"
       --panel "$work/panel.csv" --lookback 64 --pred-len 5 --samples 16 --start 2023-01-02
       --seed 0 --device cuda)
"$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m -- kronos_quant.cli \
  "${score[@]}" --store "$work/store" --out "$work/sharded.parquet" 2>&1 | tee "$OUT/score.log" \
  || status=1
"$PY" -m kronos_quant.cli "${score[@]}" --out "$work/single.parquet" 2>&1 \
  | tee -a "$OUT/score.log" || status=1
"$PY" - "$work" <<'EOF' 2>&1 | tee -a "$OUT/score.log" || status=1
import sys
import pandas as pd
from kronos_quant.signals.store import read_scores
a, b = (read_scores(f"{sys.argv[1]}/{name}.parquet") for name in ("sharded", "single"))
pd.testing.assert_frame_equal(a, b)
print(f"torchrun (NCCL) scores equal the one-process run: {len(a)} windows, "
      f"attrs equal: {a.attrs == b.attrs}")
EOF
fi
if want 6; then
echo "== 6. 5,000-name universe through forecast_panel (16 paths, ctx 120 / pred 5)"
"$PY" benchmarks/gpu_graphs.py universe 2>&1 | tee "$OUT/universe5000.log" || status=1
fi

rm -rf "$work"
echo "gpu_check: done (status $status)"
exit $status
