"""Check 4: many adapters on one resident base.

Every adapter of this verify call (the sweep's, or this job's) is attached,
computed merged in memory and unmerged, the base restored and the adapter
deleted again, ``verify.rounds``
times. After each adapter the base weights' fingerprint must equal the one taken
before the first adapter (bit-identical), and RSS (and CUDA memory) must not
grow from the end of the first round to the end of the last.
"""

from __future__ import annotations

import os

from kit.verify.check import VerifyCheck
from kit.verify.context import VerifyContext


def rss_mib() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def cuda_mib() -> float:
    import torch

    return torch.cuda.memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0


def check(ctx: VerifyContext) -> dict:
    import torch

    resident = ctx.resident
    adapters = list(dict.fromkeys([ctx.adapter, *ctx.peers]))
    ids = torch.tensor([ctx.probes()[0]], device=resident.model.device)
    with resident.lock:
        resident.restore()
        before = resident.fingerprint()
    loads, changed, marks = resident.adapter_loads, [], []
    for round_ in range(int(ctx.cfg.verify.rounds)):
        for adapter in adapters:
            with resident.lock, torch.inference_mode():
                name = resident.attach(adapter)
                for merged in (True, False):
                    resident.activate(name, merged=merged)
                    resident.forward_model(name)(input_ids=ids)
                resident.restore()
                if resident.fingerprint() != before:
                    changed.append(f"round {round_ + 1}, {adapter}")
                resident.detach(name)  # the next round loads it again (PEFT keeps a last one)
        marks.append((rss_mib(), cuda_mib()))
    growth = marks[-1][0] - marks[0][0]
    cuda_growth = marks[-1][1] - marks[0][1]
    limit = float(ctx.cfg.verify.max_rss_growth_mib)
    failed = [f"base weights differ from the snapshot after {c}" for c in changed[:3]]
    if growth > limit or cuda_growth > limit:
        failed.append(
            f"memory grew {growth:.1f} MiB RSS / {cuda_growth:.1f} MiB CUDA over {len(marks) - 1} rounds (limit {limit:g} MiB)"
        )
    return {
        "passed": not failed,
        "figures": {
            "adapters": len(adapters),
            "rounds": len(marks),
            "adapter_loads": resident.adapter_loads - loads,
            "fingerprint_changes": len(changed),
            "rss_growth_mib": round(growth, 2),
            "cuda_growth_mib": round(cuda_growth, 2),
            "base_fingerprint": before[:16],
        },
        "tolerance": {"fingerprint": "bit-identical", "memory_growth_mib": limit},
        "detail": "; ".join(failed)
        if failed
        else f"{len(adapters)} adapter(s) x {len(marks)} rounds, merged and unmerged: base bit-identical, RSS +{growth:.1f} MiB",
    }


CHECK = VerifyCheck("adapters", check, "many adapters on one resident base: bit-identical base, flat memory")
