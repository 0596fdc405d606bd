"""verify.json / verify.md in the job dir, the W&B table, and the verified configuration."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from kit.core.versions import stack_versions

JSON, MD = "verify.json", "verify.md"


def environment(device: str) -> dict:
    """Versions of the stack and the hardware the checks ran on."""
    import torch

    hardware = {
        "machine": platform.machine(),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "device": device,
        "host": platform.node(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        hardware.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    return {"versions": stack_versions(), "python": platform.python_version(), "hardware": hardware}


def apply_threads() -> dict:
    """Give torch the thread count kit.core.threads chooses (as training and eval do) and
    return the choice for the report: torch's default on a shared or quota-limited machine
    oversubscribes the cores (``kit verify`` alone: 202 s at load ~4, against 45 s with the
    choice applied inside ``kit train``)."""
    from kit.core import threads

    choice = threads.choose(os.environ)
    threads.apply(choice)
    return choice.as_dict()


def short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 400 else text[:397] + "..."


def cell(text) -> str:
    return str(text).replace("|", "\\|")  # "max|diff|" must not split a table cell


def markdown(report: dict) -> str:
    env = report["verified_configuration"]
    lines = [
        f"# kit verify: {'PASSED' if report['passed'] else 'FAILED'}",
        "",
        f"Checkpoint `{report['checkpoint']['path']}` ({report['checkpoint']['kind']}) on base "
        f"`{report['base_model']}`, {report['dtype']} on {report['device']}, {report['seconds']} s.",
        "",
        "| check | result | what was measured | tolerance | s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for c in report["checks"]:
        lines.append(
            f"| {c['name']} | {'pass' if c['passed'] else '**FAIL**'} | {cell(c['detail'])} | "
            f"{cell(short(c.get('tolerance', {})))} | {c['seconds']} |"
        )
    lines += ["", "## Figures", ""]
    for c in report["checks"]:
        lines += [f"### {c['name']}", "", "```json", json.dumps(c.get("figures", {}), indent=1, default=str), "```", ""]
    lines += ["## Verified configuration", "", "| package | version |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in env["versions"].items()]
    lines += [f"| python | {env['python']} |", "", "Hardware: " + ", ".join(f"{k}={v}" for k, v in env["hardware"].items()), ""]
    return "\n".join(lines)


def write_report(job_dir: Path, report: dict) -> None:
    for name, text in ((JSON, json.dumps(report, indent=2, default=str)), (MD, markdown(report))):
        tmp = job_dir / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(job_dir / name)


def summary_entry(report: dict) -> dict:
    """What summary.json keeps: the verdict, failed checks and where the report is."""
    return {
        "passed": report["passed"],
        "failed": [c["name"] for c in report["checks"] if not c["passed"]],
        "report": JSON,
        "markdown": MD,
        "dtype": report["dtype"],
        "seconds": report["seconds"],
    }


def log_table(run, report: dict) -> None:
    """The checks as a W&B table in the job's group (``job_type=verify``)."""
    if run is None:
        return
    import wandb

    table = wandb.Table(columns=["check", "passed", "detail", "tolerance", "seconds"])
    for c in report["checks"]:
        table.add_data(c["name"], c["passed"], c["detail"], short(c.get("tolerance", {})), c["seconds"])
    run.log({"verify/checks": table})
    run.summary.update({"verify/passed": report["passed"], "verify/seconds": report["seconds"]})
