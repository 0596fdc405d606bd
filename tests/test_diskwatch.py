"""kit.core.diskwatch measures temporary disk for real: what was written and deleted, not what stays."""

import time

from kit.core.diskwatch import DiskWatch


def test_a_deleted_file_counts_and_a_kept_file_does_not(tmp_path):
    (tmp_path / "old").write_bytes(b"x" * 10)
    with DiskWatch(tmp_path, interval_s=0.01) as watch:
        tmp = tmp_path / "kit-merged-1"
        tmp.mkdir()
        (tmp / "model.safetensors").write_bytes(b"m" * 5000)
        (tmp_path / "kept.json").write_bytes(b"k" * 300)
        time.sleep(0.2)
        (tmp / "model.safetensors").unlink()
        tmp.rmdir()
    assert watch.temp_peak_bytes == 5000


def test_nothing_written_is_zero(tmp_path):
    with DiskWatch(tmp_path, interval_s=0.01) as watch:
        time.sleep(0.05)
    assert watch.temp_peak_bytes == 0


def test_an_ignored_folder_does_not_count(tmp_path):
    logs = tmp_path / "inspect_logs"
    logs.mkdir()
    with DiskWatch(tmp_path, interval_s=0.01, ignore=(logs,)) as watch:
        (logs / ".buffer").write_bytes(b"b" * 700)
        time.sleep(0.1)
        (logs / ".buffer").unlink()
    assert watch.temp_peak_bytes == 0
