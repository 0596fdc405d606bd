"""kit.core.results: the typed results round-trip through summary.json's JSON form."""

import json
from pathlib import Path

import pytest

from kit.core.results import Checkpoint


def test_checkpoint_round_trips_through_json():
    cp = Checkpoint("adapter", Path("/jobs/0/adapter"), 1234, content_hash="ab" * 32)
    back = Checkpoint.from_json(json.loads(json.dumps(cp.to_json())))
    assert back == cp and isinstance(back.path, Path)
    assert "merged_from" not in cp.to_json()


def test_checkpoint_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="zip"):
        Checkpoint("zip", Path("x"), 0)


def test_old_summaries_with_extra_keys_still_read():
    assert Checkpoint.from_json({"kind": "full", "path": "m", "bytes": 1, "later_key": 1}).kind == "full"
