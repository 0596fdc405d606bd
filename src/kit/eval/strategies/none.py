"""``eval=none``: train and export only."""

from kit.eval.strategy import Strategy


def evaluate(ctx) -> dict:
    return {"scores": {}, "logs": [], "seconds": 0.0, "temp_peak_bytes": 0}


STRATEGY = Strategy("none", evaluate, "no evaluation", needs=())
