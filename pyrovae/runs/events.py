"""A TensorBoard event file written in the calling thread, so that a failed write (a full disk)
stops the run with one line naming the file and leaves no file without an epoch in it.

torch's ``SummaryWriter`` writes from a thread of its own: on a full disk that thread died with
a traceback, the error reached the run without a file name, and every new writer (each resume)
left one more empty event file behind. Here events are kept in memory until :meth:`flush`
(once an epoch), which appends them with ``os.write`` and ``fsync``. The file is created by the
first flush; a flush that fails cuts the file back to its last whole flush, or removes it when
nothing was flushed, and raises a :class:`~pyrovae.core.errors.PyroVAEError` naming it.

The format is TensorBoard's own: records (length, CRC, a serialized ``Event``, CRC), the first
event giving the file version. A ``purge_step`` event (a session START at that step) makes
TensorBoard drop what an earlier file logged from that step on, as ``SummaryWriter`` does.
"""

from __future__ import annotations

import io
import itertools
import os
import socket
import time
from contextlib import suppress
from pathlib import Path

from pyrovae.core.files import os_error

_NUMBERS = itertools.count()  # two files of one process in one second get different names


class EventFile:
    """``events.out.tfevents.*`` in ``folder``: ``add`` events, ``flush`` them to disk."""

    def __init__(self, folder: Path, purge_step: int | None = None) -> None:
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog

        stamp = f"{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_NUMBERS)}"
        self.folder = folder
        self.path = folder / f"events.out.tfevents.{stamp}"
        self.fd: int | None = None
        self.size = 0  # the file's length after its last whole flush
        self.pending = io.BytesIO()
        self._event(Event(wall_time=time.time(), file_version="brain.Event:2"))
        if purge_step is not None:
            start = SessionLog(status=SessionLog.START)
            self._event(Event(wall_time=time.time(), step=purge_step, session_log=start))

    def add(self, summary, step: int) -> None:
        """A ``Summary`` (torch.utils.tensorboard.summary's ``scalar``, ``image``, ``text``)."""
        from tensorboard.compat.proto.event_pb2 import Event

        self._event(Event(wall_time=time.time(), step=step, summary=summary))

    def _event(self, event) -> None:
        from tensorboard.summary.writer.record_writer import RecordWriter

        RecordWriter(self.pending).write(event.SerializeToString())

    def flush(self) -> None:
        """Append the pending events and ``fsync`` (the first flush makes folder and file); on
        failure the file is cut back and closed (see the module)."""
        data = self.pending.getvalue()
        if self.pending.closed or not data:
            return
        try:
            if self.fd is None:
                self.folder.mkdir(exist_ok=True)
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            view = memoryview(data)
            while view:  # a nearly full disk may take part of a write
                view = view[os.write(self.fd, view) :]
            os.fsync(self.fd)
        except OSError as e:
            self._abandon()
            raise os_error("write", self.path, e) from None
        except BaseException:
            self._abandon()
            raise
        self.size += len(data)
        self.pending = io.BytesIO()

    def _abandon(self) -> None:
        """Close after a failed flush, keeping the whole flushes: what the failed one wrote is
        cut off, and a file (and a folder it was made for) left with nothing is removed."""
        self.close()
        with suppress(OSError):
            if self.size > 0:
                os.truncate(self.path, self.size)
                return
            self.path.unlink(missing_ok=True)
            if not any(self.folder.iterdir()):
                self.folder.rmdir()

    def close(self) -> None:
        """Close the file. Events added since the last flush are dropped: a run flushes each
        epoch, so they belong to no epoch (a run that stopped before its first makes no file)."""
        self.pending.close()
        if self.fd is not None:
            with suppress(OSError):  # nothing is buffered: every write was fsync'ed
                os.close(self.fd)
            self.fd = None
