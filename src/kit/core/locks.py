"""One writer per job dir and per sweep dir: an exclusive ``flock`` on ``<dir>/.kit.lock``.

The operating system drops the lock when the holder exits, killed included, so a crashed run
never leaves a stale lock behind; the file keeps the holder's pid, host and start time so the
second writer can say who holds it. Locks are re-entrant within one process (the front takes
a job dir's lock before Hydra starts, and the job takes it again).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from kit.core.errors import KitError

LOCK = ".kit.lock"
HELD: dict[str, int] = {}  # lock file -> open descriptor, for this process


def hold(directory: Path, what: str) -> bool:
    """Take ``directory``'s lock until ``release`` or process exit; False if this process held it
    already. Raises a one-line KitError naming the holder when another process has it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK
    key = str(path.resolve())
    if key in HELD:
        return False
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = describe(path)
        os.close(fd)
        raise KitError(
            f"{what} {str(directory)!r} is in use by {holder}; expected one kit run per {what} "
            "(wait for it to end, or choose another dir)"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode())
    HELD[key] = fd
    return True


def release(directory: Path) -> None:
    fd = HELD.pop(str((directory / LOCK).resolve()), None)
    if fd is not None:
        os.close(fd)  # closing drops the flock


@contextmanager
def locked(directory: Path, what: str):
    """Hold ``directory``'s lock for the block (kept if this process held it before)."""
    taken = hold(directory, what)
    try:
        yield
    finally:
        if taken:
            release(directory)


def describe(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"pid {info['pid']} on host {info['host']} (since {since})"
    except (OSError, ValueError, KeyError, TypeError):  # the holder has not written its name yet
        return "another kit process"
