"""What a pipeline stage shows on its console from mmengine: progress and warnings, not the dumps.

Every mmengine Runner logs the environment, the whole config and the hook order at INFO when it is
built, to its console and to its log file (``<work_dir>/<timestamp>/<timestamp>.log``).  Over the tiny
pipeline that was 2,500 of 2,600 lines.  :func:`quiet_console` keeps the log files complete and lets
through to the console only the iteration lines of mmengine's ``LoggerHook`` (``Iter(train) ...``,
``Iter(val) ...``), the PruningHook's steps, errors, and each distinct warning once, minus the library
deprecation notices nobody here can act on.  Scripts and tests that build Runners themselves keep
mmengine's full console; the stages opt in.
"""
from __future__ import annotations

import functools
import logging
import os
import warnings
from typing import Any

#: INFO messages that are progress: mmengine's iteration lines and the PruningHook's steps.
PROGRESS_PREFIXES = ("Iter(", "Epoch(", "PruningHook:")
#: Warnings of the libraries that say nothing to a user of the pipeline (deprecations inside mmengine
#: and mmseg, the unnamed metric prefix, the visualizer the pipeline turns off on purpose).
NOISE = ("deprecated", "The prefix is not set in metric class", "The draw is False",
         "instance named of visualizer has been created")
#: Set for the processes a quiet stage starts (torchrun workers apply it too, see cpd.mm.launch).
ENV_VAR = "CPD_QUIET_CONSOLE"


class ConsoleFilter(logging.Filter):
    """A filter for mmengine's console handler: progress lines, errors, and each new warning once."""

    def __init__(self) -> None:
        super().__init__("cpd.console")
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        """True for the records the console shows."""
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            return True
        if record.levelno >= logging.WARNING:
            if message in self.seen or any(noise in message for noise in NOISE):
                return False
            self.seen.add(message)  # one filter for all the Runners of a process: once per process
            return True
        return message.startswith(PROGRESS_PREFIXES)


CONSOLE_FILTER = ConsoleFilter()


def quiet_console() -> None:
    """From now on, in this process and the ones it starts, mmengine's consoles show progress only.

    Idempotent.  Wraps ``Runner.build_logger`` so the console handler of every Runner built afterwards
    gets :data:`CONSOLE_FILTER` before the Runner logs its environment and config (its file handler is
    left alone), and ignores the library warnings of :data:`NOISE`.
    """
    from mmengine.runner import Runner

    os.environ[ENV_VAR] = "1"
    for text in NOISE:
        warnings.filterwarnings("ignore", message=f".*{text}")
    if getattr(Runner.build_logger, "_cpd_quiet", False):
        return
    original = Runner.build_logger

    @functools.wraps(original)
    def build_logger(self: Any, *args: Any, **kwargs: Any) -> logging.Logger:
        logger = original(self, *args, **kwargs)
        for handler in logger.handlers:
            # The console is the plain StreamHandler; FileHandler subclasses it and keeps everything.
            if type(handler) is logging.StreamHandler and CONSOLE_FILTER not in handler.filters:
                handler.addFilter(CONSOLE_FILTER)
        return logger

    build_logger._cpd_quiet = True  # type: ignore[attr-defined]
    Runner.build_logger = build_logger


def quiet_if_asked() -> None:
    """Apply :func:`quiet_console` in a process started by a quiet stage (``CPD_QUIET_CONSOLE=1``)."""
    if os.environ.get(ENV_VAR) == "1":
        quiet_console()
