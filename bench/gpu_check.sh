#!/usr/bin/env bash
# GPU check: run manifests/gpu.yaml on a CUDA machine without Ray, then the fast tests.
#
#   bash bench/gpu_check.sh            # from the repository root; results under $OUT
#
# Steps (each time-boxed; the whole script stops starting new steps after ~6 minutes):
#   1. install carried wheels (.whl/*.whl, e.g. structlog) into /tmp/site, print versions
#   2. sweep manifests/gpu.yaml in-process, both modes              -> $OUT/sweep.log
#   3. optional baseline: the same for two entries with the code in  -> $OUT/base.log
#      $BASE (default .gpucheck_base, e.g. `git archive HEAD exporter orchestrator`)
#   4. AOTInductor for $AOTI_ONLY (one small CUDA entry), non-strict  -> $OUT/aoti.log
#      (an AOTI compile took ~100 s per model on an H100 box with torch 2.11: resnet18 did)
#   5. the fast unit tests that need no Ray                           -> $OUT/tests.log
# A compact table of every row follows each sweep (pyarrow).
#
# Environment: OUT (default /tmp/gpucheck), PY (default python3), BASE, BUDGET_S (360),
# SWEEP_ARGS (extra arguments for step 2, e.g. "--only gpu/*"), AOTI_ONLY (entry globs).
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-/tmp/gpucheck}
PY=${PY:-python3}
BASE=${BASE:-.gpucheck_base}
BUDGET_S=${BUDGET_S:-360}
SWEEP_ARGS=${SWEEP_ARGS:-}
AOTI_ONLY=${AOTI_ONLY:-gpu/buffer_mutation}
mkdir -p "$OUT"
export PYTHONPATH="/tmp/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# step NAME MAX_S LOG CMD...: run CMD under `timeout`, bounded by what is left of the budget.
step() {
    local name=$1 max=$2 log=$3; shift 3
    local left=$((BUDGET_S - SECONDS))
    local limit=$((max < left ? max : left))
    if [ "$limit" -lt 20 ]; then
        echo "=== $name: SKIPPED (budget spent: ${SECONDS}s of ${BUDGET_S}s)"
        return 0
    fi
    echo "=== $name (limit ${limit}s, at ${SECONDS}s)"
    local t0=$SECONDS
    set -o pipefail
    timeout -k 5 "$limit" "$@" 2>&1 | tee "$log"
    local rc=$?
    set +o pipefail
    echo "=== $name: rc=$rc in $((SECONDS - t0))s$([ $rc = 124 ] && echo ' (TIMED OUT)')"
}

summary() {   # summary DIR...: one line per Parquet row under each DIR
    timeout 60 "$PY" - "$@" <<'EOF'
import glob, os, sys
import pyarrow.parquet as pq
for top in sys.argv[1:]:
    files = sorted(f for f in glob.glob(os.path.join(top, "**", "*.parquet"), recursive=True)
                   if "_clusters" not in f)
    rows = [r for f in files for r in pq.read_table(f).to_pylist()]
    print(f"--- {top}: {len(rows)} rows from {len(files)} files")
    cols = ["run_id", "entry", "mode", "device", "requested_device", "status", "category",
            "failed_stage", "total_s", "max_abs_err"]
    print(" | ".join(cols + ["aoti", "message[:150]"]))
    for r in sorted(rows, key=lambda r: (r.get("run_id") or "", r["entry"], r["mode"])):
        err = r.get("max_abs_err")
        vals = [str(r.get(c)) if c != "max_abs_err" or err is None else f"{err:.2g}" for c in cols]
        aoti = dict(r.get("stage_status") or {}).get("aoti")   # a map: pairs or a dict
        msg = (r.get("message") or "").replace("\n", " ")[:150]
        print(" | ".join(vals + [str(aoti), msg]))
EOF
}

echo "=== setup"
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || echo "wheel install FAILED"
fi
"$PY" - <<'EOF' 2>&1 | tee "$OUT/versions.log"
import platform, importlib
import torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| cudnn", torch.backends.cudnn.version(), "| available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"{p.total_memory / 2**30:.0f} GiB", f"sm_{p.major}{p.minor}",
          "| tf32 matmul", torch.backends.cuda.matmul.allow_tf32, "| tf32 cudnn",
          torch.backends.cudnn.allow_tf32)
for name in ("torchvision", "timm", "transformers", "pyarrow", "yaml", "structlog", "pytest"):
    try:
        m = importlib.import_module(name)
        print(name, getattr(m, "__version__", "?"), m.__file__.split("/site-packages/")[0][-40:])
    except Exception as e:
        print(name, "MISSING", type(e).__name__, e)
try:
    import ray  # noqa: F401
    print("ray present")
except ImportError:
    print("ray absent")
EOF
nvidia-smi -L 2>/dev/null | head -2
echo "setup done at ${SECONDS}s"

step "sweep gpu.yaml (in-process, both modes)" 170 "$OUT/sweep.log" \
    "$PY" -m orchestrator run manifests/gpu.yaml --in-process --out "$OUT/res" --run-id gpu \
    $SWEEP_ARGS
summary "$OUT/res"

if [ -d "$BASE/exporter" ]; then
    # The code in $BASE, same manifest, two CUDA entries: what the unfixed pipeline does.
    step "baseline ($BASE)" 80 "$OUT/base.log" \
        env PYTHONPATH="/tmp/site:$ROOT/$BASE" sh -c "cd '$ROOT/$BASE' && exec '$PY' -m orchestrator \
        run '$ROOT/manifests/gpu.yaml' --in-process --out '$OUT/base' --run-id base \
        --mode non-strict --only gpu/buffer_mutation --only transformers/bert"
    summary "$OUT/base"
fi

step "tests (no Ray)" 150 "$OUT/tests.log" \
    "$PY" -m pytest -x -q tests/test_pipeline.py tests/test_taxonomy.py tests/test_signature.py \
    tests/test_manifest.py tests/test_schema.py -p no:cacheprovider --durations=5

aoti_only=()
for glob in $AOTI_ONLY; do aoti_only+=(--only "$glob"); done
step "aoti ($AOTI_ONLY, non-strict)" 180 "$OUT/aoti.log" \
    "$PY" -m orchestrator run manifests/gpu.yaml --in-process --out "$OUT/aoti" --run-id aoti \
    --aoti --mode non-strict "${aoti_only[@]}"
summary "$OUT/aoti"

# Where the reload process wrote its stderr (CUDA init errors land there).
find "$OUT/res" "$OUT/aoti" -name 'freshload*.log' 2>/dev/null | head -3 | while read -r f; do
    echo "--- $f (last 15 lines)"; tail -15 "$f"; done
echo "=== done in ${SECONDS}s"
