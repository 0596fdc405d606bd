#!/usr/bin/env bash
# kit on a lent GPU machine in ONE device call (under 8 minutes: the budget is 450 s), figures into $OUT.
#
#   device tool: run(command="bash bench/gpu_run.sh", carry=[".whl"], timeout_s=480)
#
# The device tool sends the checkout the session was started in: run it from a checkout of the
# branch to measure (a helper's worktree is not what travels).
# .whl/ (ignored by .git/info/exclude) holds Python 3.12 manylinux wheels of what the GPU image
# lacks or has in another version (transformers 4.57.6, peft 0.18.1, huggingface-hub 0.36.2,
# tokenizers 0.22.2, torchao, torchtune, inspect-ai repacked without its binaries and viewer,
# botocore without its service data, hydra, submitit, ...), no torch and no wandb: every step
# runs with logger=none. They go into /tmp/k/site-packages (the name matters: Inspect gives
# kit's tasks their `kit/` prefix only for modules under a site-packages path).
#
# Steps in this order, each under `timeout` (its cap, or what the budget has left), each with its own
# log; a failed step does not stop the next, and a step the budget cannot hold is skipped and said so:
#   B  (cap 200 s) bench/scale.py --shape qwen7b --adapters 2: merge_in_memory (fused addmm_ merge),
#      peft_merge (PEFT's merge_adapter: the before figure), direct (fused LoRA, kit's decode loop,
#      CUDA-graph decode steps), peft (PEFT's unmerged forward + HF generate: the before figure),
#      base_loop (the bare base in kit's loop); merge (to disk, 2 x 13 GB written) only with
#      KIT_GPU_MERGE=1: set-up per adapter, tok/s and decode time per token vs the bare base at
#      b1/b32; each strategy's row is also printed to scale.log as soon as it is measured, so a step
#      cut short still reports it
#   C  (cap 60 s) tests/test_fused_lora.py (fused vs PEFT logits, decode loop vs HF generate, the
#      CUDA-graph decode step against the eager one on CUDA) and tests/test_bf16.py, on CUDA there
#   D  (not in the default steps) +experiment=modifiers: the three modifiers trained and scored on
#      every task in bf16; E then serves them
#   E  (cap 60 s for the base, 120 s for the run) bench/serve.py against real `kit serve` on the GPU: base / one / mixed modifiers
#      requests/s as ratios, mixed-batch vs switching server, over three synthetic rank-8 modifiers
#      on a random-weight qwen0_5b-shaped base (bench/scale.py's builder); over D's modifiers when D ran
#   A  (cap 70 s, last: it runs when the budget has room) the default job: python -m kit train
#      logger=none (bf16 on CUDA, eval=auto, verify)
#   a second call: KIT_GPU_STEPS=DE bash bench/gpu_run.sh
# $OUT (flat, 8 files): env.txt scale.log scale-<shape>.json stepC.log serve.log serve.json jobA.log
#   jobA_summary.json
#
# Knobs: KIT_GPU_BUDGET (s, whole script, default 450), KIT_GPU_SHAPE (default qwen7b),
# KIT_GPU_MERGE (default 0), KIT_GPU_STEPS (default BCEA), KIT_GPU_SERVE_SHAPE (E's base, default
# qwen0_5b), KIT_GPU_DEVICE (default cuda), KIT_GPU_PY (default python3),
# KIT_GPU_SKIP_INSTALL=1 (use KIT_GPU_PY's own packages / the caller's PYTHONPATH),
# KIT_GPU_PIP_FLAGS (extra flags for the install, e.g. --python-version 3.12 ... to try it on 3.11).
# CPU dry run of every command, path and copy (about 3 minutes on 2 cores):
#   KIT_GPU_SKIP_INSTALL=1 KIT_GPU_PY=.venv/bin/python KIT_GPU_SHAPE=tiny KIT_GPU_SERVE_SHAPE=tiny \
#     KIT_GPU_DEVICE=cpu OUT=/tmp/gpu_out_test bash bench/gpu_run.sh
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
BUDGET=${KIT_GPU_BUDGET:-450}
SHAPE=${KIT_GPU_SHAPE:-qwen7b}
STEPS=${KIT_GPU_STEPS:-BCEA}
DEV=${KIT_GPU_DEVICE:-cuda}
PY=${KIT_GPU_PY:-python3}
K=/tmp/k
SITE=$K/site-packages
mkdir -p "$K"
export KIT_CACHE=$K/cache HF_HOME=$K/hf XDG_CACHE_HOME=$K/xdg_cache XDG_DATA_HOME=$K/xdg_data
export XDG_CONFIG_HOME=$K/xdg_config MPLCONFIGDIR=$K/mpl TRITON_CACHE_DIR=$K/triton INSPECT_LOG_DIR=$K/inspect_logs
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled WANDB_SILENT=true TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
ENV=$OUT/env.txt
: >"$ENV"

say() { echo "[gpu_run $SECONDS s] $*" | tee -a "$ENV"; }

# run NAME CAP LOG CMD...: CMD under timeout min(CAP, what the budget has left - 15 s), output to LOG
run() {
    local name=$1 cap=$2 log=$3 left t start rc cmd
    shift 3
    cmd="$*"
    cmd=${cmd//$'\n'/ }
    left=$((BUDGET - SECONDS - 15))
    t=$((left < cap ? left : cap))
    if ((t < 20)); then
        say "$name: SKIPPED, only $left s of the budget left"
        return 0
    fi
    say "$name: start (timeout $t s): ${cmd:0:160}"
    start=$SECONDS
    timeout -k 10 "$t" "$@" >>"$log" 2>&1
    rc=$?
    say "$name: rc=$rc in $((SECONDS - start)) s$( ((rc == 124 || rc == 137)) && echo ' (TIMED OUT)')"
    return $rc
}

# -- install ---------------------------------------------------------------------------------
say "start: $(date -u +%FT%TZ) host $(hostname) budget ${BUDGET}s shape $SHAPE steps $STEPS"
if [ -z "${KIT_GPU_SKIP_INSTALL:-}" ]; then
    # kit itself: built here from the carried checkout (always this tree), else the carried wheel
    rm -rf "$K/dist" "$K/kitsrc" && mkdir -p "$K/dist" "$K/kitsrc"
    cp -r pyproject.toml README.md LICENSE src "$K/kitsrc/" && rm -rf "$K"/kitsrc/src/*.egg-info
    if "$PY" -m pip wheel -q --no-deps --no-build-isolation --no-index -w "$K/dist" "$K/kitsrc" >"$K/kitbuild.log" 2>&1; then
        kitwhl=$(ls "$K"/dist/kit-*.whl)
        say "kit wheel: built here from the carried tree"
    else
        kitwhl=$(ls "$ROOT"/.whl/kit-*.whl)
        say "kit wheel: CARRIED $(basename "$kitwhl") (build here failed: $(tail -n 2 "$K/kitbuild.log" | tr '\n' ' '))"
    fi
    rm -rf "$SITE"
    start=$SECONDS
    # one pip call: kit and hydra-submitit-launcher share the hydra_plugins folder
    if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        ${KIT_GPU_PIP_FLAGS:-} $(ls "$ROOT"/.whl/*.whl | grep -v '/kit-') "$kitwhl" >>"$ENV" 2>&1; then
        say "pip install FAILED (see above); stopping"
        exit 1
    fi
    say "installed $(ls "$ROOT"/.whl/*.whl | wc -l) wheels into $SITE in $((SECONDS - start)) s"
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi

# -- environment -----------------------------------------------------------------------------
{
    echo "--- nvidia-smi"
    nvidia-smi 2>&1 || echo "no nvidia-smi"
    echo "--- nproc $(nproc); memory and /tmp"
    free -g 2>&1
    df -h /tmp 2>&1
    echo "--- python: $PY; PYTHONPATH=${PYTHONPATH:-}"
} >>"$ENV"
timeout 120 "$PY" - >>"$ENV" 2>&1 <<'EOF'
import importlib, importlib.metadata as md, sys

print(sys.version.replace("\n", " "))
import torch

cuda = torch.cuda.is_available()
print(f"torch {torch.__version__} cuda {torch.version.cuda} available {cuda}",
      torch.cuda.get_device_name(0) if cuda else "-", f"bf16 {cuda and torch.cuda.is_bf16_supported()}")
for mod, dist in [("transformers", "transformers"), ("peft", "peft"), ("torchtune", "torchtune"), ("torchao", "torchao"),
                  ("inspect_ai", "inspect-ai"), ("huggingface_hub", "huggingface-hub"), ("tokenizers", "tokenizers"),
                  ("accelerate", "accelerate"), ("hydra", "hydra-core"), ("numpy", "numpy"), ("kit", "kit")]:
    try:
        m = importlib.import_module(mod)
        print(f"{dist} {md.version(dist)} from {m.__file__}")
    except Exception as e:  # noqa: BLE001
        print(f"{dist}: IMPORT FAILED: {type(e).__name__}: {e}")
print("wandb imported:", "wandb" in sys.modules)
EOF
say "environment recorded"
grep -E "^(torch|transformers|peft|torchtune|inspect-ai|kit) |FAILED|NVIDIA H|GiB" "$ENV" | head -20

# -- B: eval strategies at the scale of a 7B model -------------------------------------------
if [[ $STEPS == *B* ]]; then
    strategies=merge_in_memory,peft_merge,direct,peft,base_loop
    [ "${KIT_GPU_MERGE:-0}" = 1 ] && strategies=$strategies,merge
    rm -rf "$K/scale_tmp" "$K/scale-$SHAPE.json" && mkdir -p "$K/scale_tmp"
    run B 200 "$OUT/scale.log" "$PY" -c '
import json, sys
sys.argv = ["bench/scale.py", *sys.argv[1:]]
sys.path.insert(0, "bench")
import scale

measure = scale.measure_strategy

def measured(name, *args, **kwargs):  # each row as soon as it is measured (a timeout keeps them)
    row = measure(name, *args, **kwargs)
    print("[scale-row]", json.dumps({name: row}, default=str), flush=True)
    return row

scale.measure_strategy = measured
scale.main()
' --shape "$SHAPE" --adapters 2 --strategies "$strategies" --batches 1,32 --device "$DEV" \
        --tmp "$K/scale_tmp" --out "$K/scale-$SHAPE.json"
    cp "$K/scale-$SHAPE.json" "$OUT/scale-$SHAPE.json" 2>/dev/null || say "B: no results JSON (rows so far are in scale.log)"
    rm -rf "$K/scale_tmp"
    grep -E '^\||^shape|^\[scale\]|Error|error' "$OUT/scale.log" | tail -n 20
fi

# -- C: the fused path and bf16 training tests on CUDA -------------------------------------
if [[ $STEPS == *C* ]]; then
    run C 60 "$OUT/stepC.log" "$PY" -m pytest tests/test_fused_lora.py tests/test_bf16.py -q -p no:cacheprovider
    [ -f "$OUT/stepC.log" ] && tail -n 8 "$OUT/stepC.log"
fi

# -- D: the bundled modifiers demo on the GPU (KIT_GPU_STEPS=DE) -----------------------------
if [[ $STEPS == *D* ]]; then
    JOBD=/tmp/jobD
    rm -rf "$JOBD"
    run D 240 "$OUT/jobD.log" "$PY" -m kit train +experiment=modifiers logger=none "hydra.run.dir=$JOBD"
    cp "$JOBD/summary.json" "$OUT/jobD_summary.json" 2>/dev/null || say "D: no $JOBD/summary.json"
    tr '\r' '\n' <"$OUT/jobD.log" | grep -E '^kit: |^  ' | tail -n 30
fi

# -- E: kit serve on the GPU: bench/serve.py -------------------------------------------------
if [[ $STEPS == *E* ]]; then
    registry=/tmp/jobD
    if [ -f "$registry/modifiers.json" ]; then
        serve_args=(--registry "$registry")
    else  # synthetic modifiers on a random base of a real shape (no training)
        base=$K/serve_base
        rm -rf "$base"
        run E0 60 "$OUT/serve.log" "$PY" -c '
import sys
from pathlib import Path
sys.path.insert(0, "bench")
import scale
scale.build_base(sys.argv[1], Path(sys.argv[2]), sys.argv[3], "bfloat16" if sys.argv[3] == "cuda" else "float32")
' "${KIT_GPU_SERVE_SHAPE:-qwen0_5b}" "$base" "$DEV" || say "E: base build failed"
        serve_args=(--base "$base")
    fi
    run E 120 "$OUT/serve.log" "$PY" bench/serve.py "${serve_args[@]}" --requests 32 \
        --device "$DEV" --concurrency 8 --new-tokens 16 --rounds 2
    cp bench/results/serve.json "$OUT/serve.json" 2>/dev/null || say "E: no serve.json"
    tail -n 25 "$OUT/serve.log"
fi

# -- A: the default job on the GPU -----------------------------------------------------------
if [[ $STEPS == *A* ]]; then
    JOB=/tmp/jobA
    rm -rf "$JOB"  # a finished job dir is skipped by kit, not re-run
    run A 70 "$OUT/jobA.log" "$PY" -m kit train logger=none "hydra.run.dir=$JOB"
    for f in summary.json; do
        cp "$JOB/$f" "$OUT/jobA_$f" 2>/dev/null || say "A: no $JOB/$f"
    done
    tr '\r' '\n' <"$OUT/jobA.log" | grep -v -e 'it/s]' -e '^[[:space:]]*$' | tail -n 25
    [ -f "$OUT/jobA_summary.json" ] && "$PY" - "$OUT/jobA_summary.json" <<'EOF'
import json, sys

s = json.load(open(sys.argv[1]))
e = s.get("eval") or {}
print("A summary:", s.get("status"), "scores", s.get("scores"), "base", s.get("base_scores"),
      "| eval", e.get("strategy_chosen"), "-", e.get("why"), "| verify passed", (s.get("verify") or {}).get("passed"),
      "| train", (s.get("train") or {}).get("dtype"), "| timings", s.get("timings"))
EOF
fi

say "done: $(ls "$OUT" | tr '\n' ' ')"
