"""When a process group breaks: which peers are gone, learned through the group's store, so
that every rank stops with one line naming them.

A rank that dies (kill -9, the out-of-memory killer, a machine going down) or hangs (SIGSTOP,
a cut network) shows on its peers as an error of whatever collective they were in: gloo's
"Connection reset by peer" at once, or "Timed out waiting …ms" after ``--dist-timeout``. Under
torchrun on one machine the agent then ends the other ranks; across machines, or with ranks
started by hand, nothing does. So a rank that leaves its group with an error the other ranks
do not share (a shared one is marked by :func:`~pyrovae.core.distributed.reported_by_root`)
holds a :func:`post_mortem`:

1. it checks in under ``pyrovae/left/<rank>`` with its error's first line, numbered in the
   order of checking in;
2. it destroys its process group, so that peers blocked on it fail now instead of after the
   timeout, and check in too;
3. it waits up to :data:`CHECK_IN` seconds for every rank to check in; those that do not are
   lost. A store that does not answer went with its host: rank 0, whose process holds it (with
   torchrun, the agent on rank 0's machine). A store client waits for ever on a host that is
   stopped (its timeout does not cover that), so each exchange runs in a thread of its own,
   given up on after its time;
4. its verdict names the lost ranks; with none lost, the first rank to check in failed first,
   and the others name it and its error. A rank's own :class:`PyroVAEError` (or Ctrl-C) is
   raised there as it is.

Rank 0 then waits for the ranks that checked in to have read the store, which lives in its
process, before it leaves.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from contextlib import suppress
from datetime import timedelta
from typing import TypeVar

import torch.distributed as dist

from pyrovae.core.errors import PyroVAEError, first_line

# seconds the ranks still alive get to check in (at most --dist-timeout): they run in lockstep,
# so they meet the failure within one collective of each other, and then fail at once as each
# closes its connections; the wait for a rank that never comes is this long
CHECK_IN = 5.0
LEFT, READ, COUNT = "pyrovae/left", "pyrovae/read", "pyrovae/failures"
T = TypeVar("T")


def post_mortem(
    store: dist.Store,
    rank: int,
    world: int,
    error: BaseException,
    timeout: float,
    run_dir: str | None = None,
) -> PyroVAEError | None:
    """After ``error`` ended this rank's part in the group (see the module): the one-line error
    to raise instead, or None to raise ``error`` itself. At most 6 × CHECK_IN s (a dead peer: about
    CHECK_IN)."""
    grace = timedelta(seconds=min(CHECK_IN, timeout))
    seconds = grace.total_seconds()
    store.set_timeout(grace)

    def check_in() -> bool:
        order = store.add(COUNT, 1)
        store.set(f"{LEFT}/{rank}", f"{order} {first_line(error)}")
        return True

    answers = _within(seconds, check_in)  # None: the store is gone or stopped with its host
    if dist.is_initialized():
        dist.destroy_process_group()
    own = isinstance(error, (PyroVAEError, KeyboardInterrupt))
    if not answers:
        return None if own else _verdict(rank, world, error, None, timeout, run_dir)
    left = None
    if rank == 0 or not own:
        left = _within(2 * seconds, lambda: _check_ins(store, world, grace))
    _within(seconds, lambda: store.set(f"{READ}/{rank}", ""))
    if rank == 0 and left:  # the store lives here: stay until the others have read it
        _within(2 * seconds, lambda: store.wait([f"{READ}/{r}" for r in left if r != 0], grace))
    return None if own else _verdict(rank, world, error, left, timeout, run_dir)


def _within(seconds: float, fn: Callable[[], T]) -> T | None:
    """``fn()`` in a daemon thread: its result, or None when it failed (a store gone) or had
    not returned after ``seconds`` (a store stopped; the thread is left waiting)."""
    box: list[T] = []

    def run() -> None:
        with suppress(RuntimeError):  # torch's DistError: a store gone, or a wait timed out
            box.append(fn())

    thread = threading.Thread(target=run, name="pyrovae-post-mortem", daemon=True)
    thread.start()
    thread.join(seconds)
    return box[0] if box else None


def _check_ins(store: dist.Store, world: int, grace: timedelta) -> dict[int, tuple[int, str]]:
    """rank ↦ (order, first line of its error) for the ranks that checked in within ``grace``
    (raises if the store does not answer)."""
    keys = [f"{LEFT}/{r}" for r in range(world)]
    with suppress(RuntimeError):  # a timeout: not every rank came
        store.wait(keys, grace)
    found = {}
    for r, key in enumerate(keys):
        if store.check([key]):
            order, _, message = store.get(key).decode().partition(" ")
            found[r] = (int(order), message)
    return found


def _verdict(
    rank: int,
    world: int,
    error: BaseException,
    left: dict[int, tuple[int, str]] | None,
    timeout: float,
    run_dir: str | None,
) -> PyroVAEError | None:
    head = f"rank {rank} of {world} stopped: "
    if left is None:  # the store went with its host
        left = {r: (0, "") for r in range(world) if r != 0}
    lost = [r for r in range(world) if r not in left and r != rank]
    if lost:
        who = f"rank{'s' if len(lost) > 1 else ''} {', '.join(map(str, lost))}"
        if re.search(r"timed? ?out", str(error), re.IGNORECASE):
            why = f"did not answer within --dist-timeout {timeout:g} s (hung, stopped or cut off)"
            then = "end every rank still running, then start"
        else:
            why = "left the group (its process died, or its machine cannot be reached)"
            then = "start"
        return PyroVAEError(
            f"{head}{who} {why}; the last checkpoint is kept: {then} all {world} processes "
            f"again with pyrovae train --resume {run_dir or 'RUN_DIR'}"
        )
    first = min(left, key=lambda r: left[r][0], default=rank)
    if first == rank or not left[first][1]:
        return None
    return PyroVAEError(f"{head}rank {first} failed: {left[first][1]}")
