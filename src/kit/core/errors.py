"""One exception type for bad input: the CLI prints its message as one line and exits 2."""


class KitError(Exception):
    """A user-facing error: the message names the bad value and the expected form."""
