"""kit's progress and diagnostics: the ``kit`` logger, and the known-harmless noise of the stack.

``setup()`` configures the ``kit`` logger once per command: ``kit: <message>`` lines on stderr
(``kit: warning: ...`` from WARNING up), level from ``KIT_LOG_LEVEL`` (default INFO). The
logger does not propagate, so under Hydra (whose job logging gives the root logger a console and
a ``<job>/<name>.log`` handler) each line shows once; ``setup()`` adds Hydra's job-log file handler
so the job's log file still holds kit's lines. The one-line ``kit: error: ...`` for bad input and
a command's result stay plain prints (they are the command's answer, not progress).

``quiet_known_noise()`` drops messages that are known to be harmless here, each by its exact
message and the logger/module that emits it, never by category alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

NAME = "kit"
LEVEL_ENV = "KIT_LOG_LEVEL"

# (logger name, message start): logging records dropped by quiet_known_noise()
NOISY_LOGS = (
    # torchao 0.15 has no C++ kernels for torch 2.13; kit uses none of them (the pinned set: constraints.in)
    ("torchao", "Skipping import of cpp extensions due to incompatible torch version"),
    ("torchao.kernel.intmm", "Warning: Detected no triton"),
    # the recipe's profiler is off unless asked for; torchtune says so as a WARNING on every run
    ("torchtune.utils._logging", "Profiling disabled."),
)
# third-party loggers whose INFO/DEBUG lines kit replaces with its own progress lines;
# shown again with KIT_LOG_LEVEL=DEBUG
CHATTY_LOGGERS = ("torchtune.utils._logging",)
# (message regex, category, module regex): Python warnings ignored inside quiet_warnings()
NOISY_WARNINGS = (
    # torchtune's recipe calls torch.set_vital through torchdata's loader; nothing to act on
    (r"'set_vital' is deprecated", UserWarning, r"torchdata\."),
    # Inspect 0.3.285 passes tenacity's deprecated 'initial' to wait_exponential_jitter
    (r"The 'initial' parameter is deprecated", DeprecationWarning, r"inspect_ai\."),
    # torchtune 0.6.1 imports torchao.dtypes names that torchao 0.15 moved to its prototype package
    (r"Importing (\w+ )?from torchao\.dtypes", DeprecationWarning, r"torchao\.dtypes"),
    # torchtune 0.6.1's RMSNorm computes in fp32 on purpose (x.float()) with its bf16 scale;
    # torch then warns on every bf16 training step (seen on an H100) that it cannot fuse it
    (r"Mismatch dtype between input and weight", UserWarning, r"torch\.nn\.functional"),
)


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        return f"kit: {level}{record.getMessage()}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is emitted (a test's capture, a redirect),
    not to the stream that was current when ``setup()`` first ran; ``setStream`` still pins one."""

    def __init__(self) -> None:
        self._pinned = None
        super().__init__()
        self._ready = True

    @property
    def stream(self):
        return self._pinned if self._pinned is not None else sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        if getattr(self, "_ready", False):  # setStream(); StreamHandler.__init__'s own assignment is ignored
            self._pinned = value


class _WarningsUp(logging.Filter):
    """Lets a chatty logger's warnings through; its INFO/DEBUG only when kit logs at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or logging.getLogger(NAME).isEnabledFor(logging.DEBUG)


class _DropMessages(logging.Filter):
    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).lstrip().startswith(self.starts)


def level() -> int:
    name = os.environ.get(LEVEL_ENV, "INFO").upper()
    value = logging.getLevelName(name)
    return value if isinstance(value, int) else logging.INFO


def get(name: str | None = None) -> logging.Logger:
    """The ``kit`` logger, or a child of it (``get(__name__)`` in a kit module)."""
    if name is None or name == NAME:
        return logging.getLogger(NAME)
    return logging.getLogger(name if name.startswith(NAME + ".") else f"{NAME}.{name}")


def setup() -> logging.Logger:
    """Configure the ``kit`` logger (idempotent: call it at the start of every command and job)."""
    logger = logging.getLogger(NAME)
    logger.setLevel(level())
    logger.propagate = False  # Hydra's root console handler would print every line a second time
    if not any(getattr(h, "_kit", False) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_Format())
        handler._kit = True
        logger.addHandler(handler)
    follow_job_log(logger)
    quiet_known_noise()
    return logger


def follow_job_log(logger: logging.Logger) -> None:
    """Write kit's lines into the log file Hydra opened for this job too (``<job>/<job name>.log``)."""
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    for h in list(logger.handlers):
        if isinstance(h, logging.FileHandler) and h not in files:
            logger.removeHandler(h)  # a previous job's file (multirun)
    for h in files:
        if h not in logger.handlers:
            logger.addHandler(h)


def quiet_known_noise() -> None:
    """Drop the known-harmless log records of NOISY_LOGS (a filter on each emitting logger only)."""
    by_logger: dict[str, list[str]] = {}
    for name, start in NOISY_LOGS:
        by_logger.setdefault(name, []).append(start)
    for name, starts in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(tuple(starts)))
    for name in CHATTY_LOGGERS:  # a filter, not a level: the recipe resets its logger's level on import
        logger = logging.getLogger(name)
        if not any(isinstance(f, _WarningsUp) for f in logger.filters):
            logger.addFilter(_WarningsUp())


@contextlib.contextmanager
def quiet_warnings():
    """Ignore the known-harmless Python warnings of NOISY_WARNINGS while the block runs (and only them)."""
    with warnings.catch_warnings():
        for message, category, module in NOISY_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category, module=module)
        yield


def pytest_filters() -> list[str]:
    """NOISY_WARNINGS as pytest ``filterwarnings`` lines (the test suite uses the same list)."""
    return [f"ignore:{m}:{c.__name__}:{mod}" for m, c, mod in NOISY_WARNINGS]


def seconds(s: float) -> str:
    return f"{s:.1f} s"


@contextlib.contextmanager
def timed(logger: logging.Logger, what: str):
    """``<what> ...`` when the block starts and ``<what> done in N s[: detail]`` when it ends;
    the block may set ``info["detail"]``; ``info["seconds"]`` holds the time afterwards."""
    import time

    info: dict = {}
    logger.info("%s ...", what)
    start = time.perf_counter()
    try:
        yield info
    except BaseException:
        logger.info("%s stopped after %s", what, seconds(time.perf_counter() - start))
        raise
    info["seconds"] = time.perf_counter() - start
    detail = f": {info['detail']}" if info.get("detail") else ""
    logger.info("%s done in %s%s", what, seconds(info["seconds"]), detail)
