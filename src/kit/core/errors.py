"""One exception type for bad input: the CLI prints its message as one line and exits 2."""


class KitError(Exception):
    """A user-facing error: the message names the bad value and the expected form."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or a cancelled Inspect eval): the message says what was kept and where.

    A KeyboardInterrupt, so nothing on the way up mistakes it for a failure to report and
    go on from; the CLI prints it as one line and exits 130."""


def disk_full(e: OSError) -> KitError | None:
    """A KitError naming the file, for a write that failed because its disk is full (or over quota)."""
    import errno

    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    where = e.filename or "a file"
    return KitError(f"disk full writing {where} ({e.strerror}); free space there and run the same command again")


class CheckpointChanged(KitError):
    """A job's checkpoint is not the one it recorded (its content hash differs): never scored or
    served under the identity of the adapter it was trained as; ``kit verify`` records it as failed."""
