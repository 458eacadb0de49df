"""SIGTERM ends a command as Ctrl-C does. Schedulers (Slurm, Kubernetes, torchrun) stop a job
with SIGTERM, and a run stopped that way must end as an interrupted one: the write in progress
undone (its temporary file removed), the last checkpoint kept, one line on stderr.

The handler is installed only while a command runs (:func:`sigterm_as_interrupt`), never on
import, and the previous one is restored after it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130, the shell's status for a Ctrl-C'd command
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143, what a scheduler expects of a SIGTERM'd job
RETRY_SECONDS = 0.01  # a Terminated that Python ignored is raised again this much later


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived. A :class:`KeyboardInterrupt`, so that whatever cleans up after Ctrl-C
    (atomic writes, locks, DataLoader workers) cleans up after it too."""


class _Termination:
    """SIGTERM's handler for the process that installs it, and what it changed.

    Python ignores an exception raised where it cannot propagate (a ``__del__``, the hooks
    that run after ``fork``: a SIGTERM that comes while a DataLoader forks its workers is
    handled there) and reports it to ``sys.unraisablehook``. For :class:`Terminated` that hook
    raises it again shortly, from a timer's SIGALRM: a signal sent at once would be handled
    inside the hook, where it would be ignored again.

    A process forked while the handler is set (a DataLoader worker) ignores SIGTERM: a
    scheduler signals every process of the job, and the owner stops its workers as it unwinds.
    Once SIGTERM has arrived, what fails because of it (a DataLoader whose workers the same
    signal stopped: torch reports them killed) is part of the termination, not another error.
    """

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.hook = sys.unraisablehook
        self.alarm: Any = None  # SIGALRM's handler before a retry was armed
        self.arrived = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() == self.owner:
            self.arrived = True
            raise Terminated

    def unraisable(self, info: Any) -> None:
        if not isinstance(info.exc_value, Terminated):
            if not self.arrived:
                self.hook(info)
            return
        if self.alarm is None:
            self.alarm = signal.signal(signal.SIGALRM, self.handle)
        signal.setitimer(signal.ITIMER_REAL, RETRY_SECONDS)

    def undo(self, previous: Any) -> None:
        if self.alarm is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, _python_handler(self.alarm))
        sys.unraisablehook = self.hook
        signal.signal(signal.SIGTERM, _python_handler(previous))


def _python_handler(previous: Any) -> Any:
    """``previous`` as ``signal.signal`` takes it back: None (a handler set outside Python,
    which Python cannot reinstall) becomes the default."""
    return signal.SIG_DFL if previous is None else previous


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in the main thread for the block, and so does an
    error that leaves the block after it; the previous handlers are back afterwards. Off the
    main thread (where Python cannot set handlers) the block runs with the handlers as they
    are."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    termination = _Termination()
    previous = signal.signal(signal.SIGTERM, termination.handle)
    sys.unraisablehook = termination.unraisable
    try:
        yield
    except Exception as e:
        if termination.arrived:  # e.g. DataLoader workers found killed while unwinding
            raise Terminated from e
        raise
    finally:
        termination.undo(previous)
