"""Training overhead of kit over plain torchtune.

Runs the default job (``python -m kit train logger=none``) and then the very same
training through ``tune run lora_finetune_single_device``, replaying the
``torchtune.yaml`` that the kit job wrote (only its output folders changed; the
metric logger stays ``kit.train.metric_logger.JobMetricLogger`` so both sides time
steps identically). Reports the default job's total wall time (start-up, training,
export, eval) and each side's median step time: the median of consecutive
``time`` differences in ``metrics.jsonl``, the first 5 steps left out as warm-up.

    .venv/bin/python bench/train_overhead.py [--repeats N]

With ``--repeats N`` kit and tune runs alternate N times; the table shows the
medians of the per-run figures. Results also go to bench/results/train_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results" / "train_overhead.json"
WARMUP_STEPS = 5
ENV = {
    **os.environ,
    "KIT_CACHE": "/tmp/kitcache-bench",
    "WANDB_MODE": "disabled",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
}


def run(cmd: list[str], log: Path) -> float:
    """Run cmd with output to log; return its wall time, or exit showing the error."""
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run(cmd, cwd=ROOT, env=ENV, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        sys.exit(f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n--- last lines of {log} ---\n{tail}")
    return seconds


def median_step_ms(metrics: Path) -> tuple[float, int]:
    """Median step time in ms after warm-up, and the number of steps logged."""
    rows = sorted((json.loads(line) for line in metrics.read_text().splitlines() if line.strip()), key=lambda r: r["step"])
    times = [r["time"] for r in rows][WARMUP_STEPS:]
    gaps = [b - a for a, b in zip(times, times[1:])]
    return statistics.median(gaps) * 1000, len(rows)


def kit_run(tmp: Path) -> dict:
    job = tmp / "kit"
    wall = run([sys.executable, "-m", "kit", "train", "logger=none", f"hydra.run.dir={job}"], tmp / "kit.log")
    step_ms, steps = median_step_ms(job / "metrics.jsonl")
    summary = json.loads((job / "summary.json").read_text())
    return {"wall_s": wall, "step_ms": step_ms, "steps": steps, "timings": summary.get("timings")}


def tune_run(tmp: Path) -> dict:
    out = tmp / "tune"
    out.mkdir()
    cfg = OmegaConf.load(tmp / "kit" / "torchtune.yaml")
    cfg.output_dir = cfg.checkpointer.output_dir = str(out / "torchtune_out")
    cfg.metric_logger.log_dir = str(out)
    config = out / "torchtune.yaml"
    OmegaConf.save(cfg, config)
    cmd = [str(VENV_BIN / "tune"), "run", "lora_finetune_single_device", "--config", str(config)]
    wall = run(cmd, tmp / "tune.log")
    step_ms, steps = median_step_ms(out / "metrics.jsonl")
    return {"wall_s": wall, "step_ms": step_ms, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="alternating kit and tune runs (default 1)")
    args = parser.parse_args()

    kits, tunes = [], []
    with tempfile.TemporaryDirectory(prefix="kit-overhead-") as tmp:
        for i in range(args.repeats):
            run_dir = Path(tmp) / f"run{i}"
            run_dir.mkdir()
            kits.append(kit_run(run_dir))
            tunes.append(tune_run(run_dir))
            print(
                f"run {i + 1}/{args.repeats}: kit {kits[-1]['step_ms']:.2f} ms/step, tune {tunes[-1]['step_ms']:.2f} ms/step",
                file=sys.stderr,
            )

    wall = statistics.median(k["wall_s"] for k in kits)
    kit_ms = statistics.median(k["step_ms"] for k in kits)
    tune_ms = statistics.median(t["step_ms"] for t in tunes)
    ratio = kit_ms / tune_ms
    result = {
        "repeats": args.repeats,
        "default_job_wall_s": round(wall, 2),
        "kit_median_step_ms": round(kit_ms, 3),
        "tune_median_step_ms": round(tune_ms, 3),
        "ratio_kit_over_tune": round(ratio, 4),
        "overhead_percent": round((ratio - 1) * 100, 2),
        "runs": {"kit": kits, "tune": tunes},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")

    print("| default job wall s | kit median step ms | tune median step ms | ratio kit : tune | overhead % |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {wall:.1f} | {kit_ms:.2f} | {tune_ms:.2f} | {ratio:.3f} | {(ratio - 1) * 100:+.1f} |")
    print(f"\n(median of {args.repeats} run(s); target overhead < 5%; JSON: {RESULTS.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
