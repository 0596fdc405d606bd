"""Measure the temporary disk a piece of work uses: the peak bytes of files it creates under a
folder and deletes again before it ends (a merged model written for the eval, say).

Polled from a thread, so a file that lives shorter than one poll interval can be missed; the eval
strategies' temporary models live for seconds at least.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


def file_sizes(root: Path, ignore: tuple[Path, ...] = ()) -> dict[str, int]:
    sizes: dict[str, int] = {}
    skip = {str(p) for p in ignore}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(folder, d) not in skip]
        for name in files:
            path = os.path.join(folder, name)
            try:
                sizes[path] = os.stat(path).st_size
            except OSError:  # deleted while walking
                continue
    return sizes


class DiskWatch:
    """``with DiskWatch(folder) as w: ...`` then ``w.temp_peak_bytes``: the largest total size, at any
    poll, of the files that did not exist before the block and are gone after it."""

    def __init__(self, root: Path, interval_s: float = 0.05, ignore: tuple[Path, ...] = ()):
        self.root = Path(root)
        self.ignore = tuple(Path(p) for p in ignore)  # subfolders that are someone else's business
        self.interval_s = interval_s
        self.temp_peak_bytes = 0
        self._before: set[str] = set()
        self._polls: list[dict[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kit-diskwatch", daemon=True)

    def __enter__(self) -> DiskWatch:
        self._before = set(file_sizes(self.root, self.ignore)) if self.root.exists() else set()
        self._thread.start()
        return self

    def _poll(self) -> None:
        if self.root.exists():
            new = {p: s for p, s in file_sizes(self.root, self.ignore).items() if p not in self._before}
            if new:
                self._polls.append(new)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._poll()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        remaining = set(file_sizes(self.root, self.ignore)) if self.root.exists() else set()
        self.temp_peak_bytes = max((sum(s for p, s in poll.items() if p not in remaining) for poll in self._polls), default=0)
