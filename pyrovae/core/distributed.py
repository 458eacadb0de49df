"""Data-parallel processes: which rank this process is, the process group a launcher describes,
and how the ranks agree.

Under ``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``) :func:`process_group_from_env` joins the group; without those variables nothing
is started and every helper here reduces to a plain call, so one process runs exactly as before.

Ranks run the same code in the same order. Work that rank 0 alone may do (everything that
touches the run folder) goes through :func:`on_root` / :func:`from_root`; work every rank does
but that may fail on one of them (reading its copy of the data) goes through :func:`agree`. In
both the outcome is shared, so a failure on any rank stops every rank with the same one-line
error instead of leaving the others waiting in a collective. Rank 0 reports such an error; the
others raise it marked ``reported_by_root`` and the CLI keeps them quiet. A rank that leaves
the group with any other error, or a peer that dies or hangs, is sorted out through the
group's store (:mod:`pyrovae.core.peers`): every rank still alive stops with one line naming
the rank that failed.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from pyrovae.core.errors import PyroVAEError, first_line
from pyrovae.core.peers import post_mortem
from pyrovae.core.runtime import parse_device, resolve_device

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)

DEFAULT_TIMEOUT = 300.0  # seconds a process waits for the others (rendezvous, any collective)
# the longest wait allowed: a week is longer than any epoch's work on one rank, and past it
# (inf, 1e300) torch's timedelta and millisecond counts overflow with a traceback
MAX_TIMEOUT = 7 * 24 * 3600.0
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE")


def is_distributed() -> bool:
    """Whether this process belongs to an initialized process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the group (0 without one)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """How many processes train together (1 without a group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_root() -> bool:
    return rank() == 0


def local_rank() -> int:
    """This process's rank among those of its machine (``LOCAL_RANK``; 0 without a group)."""
    return _env_int("LOCAL_RANK", rank()) if is_distributed() else 0


def launched() -> bool:
    """Whether a launcher (torchrun) started this process as one rank of a group."""
    return all(name in os.environ for name in LAUNCH_VARIABLES)


def launch_rank() -> int:
    """The rank the launcher gave this process (0 when none did); readable before joining."""
    return _env_int("RANK", 0) if launched() else 0


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s noise stream: ``seed`` itself for rank 0 (so one process is
    the world-size-1 case), for the others 32 bits of SHA-256(seed, rank), a stream of their own
    (32 bits: NumPy's generator takes no more)."""
    if rank == 0:
        return seed
    digest = hashlib.sha256(f"pyrovae-rank-stream:{seed}:{rank}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def backend() -> str:
    """gloo for CPU tensors, and NCCL for CUDA tensors where there are GPUs: object and loss
    exchanges go over gloo, the gradients of a model on GPU over NCCL."""
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def _env_int(name: str, default: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None and default is not None:
        return default
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise PyroVAEError(f"${name} must be a whole number, got {value!r}") from None


def check_timeout(timeout: float) -> None:
    """A one-line :class:`PyroVAEError` unless 0 < ``timeout`` ≤ :data:`MAX_TIMEOUT` seconds."""
    if not (isinstance(timeout, (int, float)) and 0 < timeout <= MAX_TIMEOUT):  # NaN fails too
        raise PyroVAEError(
            f"--dist-timeout must be a number of seconds in (0, {MAX_TIMEOUT:g}] (a week), "
            f"got {timeout}"
        )


@contextmanager
def process_group_from_env(
    timeout: float = DEFAULT_TIMEOUT, run_dir: str | None = None
) -> Iterator[int]:
    """Join the process group the launcher's variables describe for the block; yields this
    process's rank. Without those variables (a plain ``pyrovae train``), or inside a group the
    caller already joined, nothing is started or closed.

    ``timeout`` (seconds) bounds the rendezvous and every later collective: a process whose
    peers never come, or stop answering, stops with a one-line error instead of waiting for
    ever. An error that leaves the block on this rank alone (not :func:`reported_by_root`'s),
    a peer's death among them, goes through :func:`~pyrovae.core.peers.post_mortem`, whose
    line names ``run_dir`` to resume (``RUN_DIR`` when the folder is not known yet: a default
    name is made later, by rank 0).
    """
    if not launched() or is_distributed():
        yield rank()
        return
    if not dist.is_available():
        raise PyroVAEError("this torch build has no torch.distributed; run without torchrun")
    check_timeout(timeout)
    r, w = _env_int("RANK"), _env_int("WORLD_SIZE")
    if not 0 <= r < w:
        raise PyroVAEError(f"$RANK must be in 0…$WORLD_SIZE−1, got RANK={r}, WORLD_SIZE={w}")
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        with _native_stderr_held_back():
            store = _join(timedelta(seconds=timeout))
    except (RuntimeError, ValueError, TimeoutError) as e:  # torch's DistError is a RuntimeError
        cause = first_line(e).rstrip(".")
        raise PyroVAEError(
            f"rank {r} of {w} could not join the process group at {where} within {timeout:g} s "
            f"({cause}); check that all {w} processes started and can reach that address "
            "(torchrun's --rdzv-endpoint / --master-addr), or wait longer with --dist-timeout"
        ) from None
    try:
        yield dist.get_rank()
    except (Exception, KeyboardInterrupt) as e:
        if hasattr(e, "reported_by_root"):  # raised alike on every rank
            raise
        with _native_stderr_held_back():  # the store client's logs of a peer gone, in C++
            verdict = post_mortem(store, r, w, e, timeout, run_dir)
        if verdict is None:
            raise
        raise verdict from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _join(timeout: timedelta) -> dist.Store:
    """``init_process_group`` from the launcher's variables, as torch does it, but keeping the
    group's store (for :func:`~pyrovae.core.peers.post_mortem`)."""
    store, r, w = next(dist.rendezvous("env://", timeout=timeout))
    store.set_timeout(timeout)
    group_store = dist.PrefixStore("default_pg", store)
    dist.init_process_group(backend(), store=group_store, rank=r, world_size=w, timeout=timeout)
    return store


@contextmanager
def _native_stderr_held_back() -> Iterator[None]:
    """Discard what is written to the stderr file descriptor in the block. While a rank waits
    for its peers, torch's C++ store client logs every failed connection attempt there, each
    with a native stack trace (and so it does for a store gone with its host): chatter on the
    way to joining or leaving, and on failure our one line says it all. The descriptor is
    restored on leaving."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def rank_device(name: str) -> torch.device:
    """:func:`~pyrovae.core.runtime.resolve_device`, and in a process group on a GPU machine
    the GPU ``LOCAL_RANK``: one GPU per process, refused when this machine runs more processes
    than it has visible GPUs."""
    asked = parse_device(name)
    if is_distributed() and asked is not None and asked.type == "cuda" and asked.index is not None:
        raise PyroVAEError(
            f"--device {name}: under torchrun each process takes the GPU of its LOCAL_RANK; "
            "use --device cuda"
        )
    device = resolve_device(name)
    if not is_distributed() or device.type != "cuda":
        return device
    local = local_rank()
    local_world = _env_int("LOCAL_WORLD_SIZE", world_size())
    count = torch.cuda.device_count()
    if local_world > count or local >= count:
        raise PyroVAEError(
            f"{local_world} processes on this machine but {count} CUDA GPU"
            f"{'' if count == 1 else 's'} visible: each process needs a GPU of its own (use "
            f"--nproc_per_node {count} or fewer, or --device cpu)"
        )
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def reported_by_root(error: E) -> E:
    """Mark ``error``, raised alike on every rank, as rank 0's to report (the CLI prints it on
    rank 0 alone); returns it, for ``raise reported_by_root(...)``."""
    error.reported_by_root = rank() != 0  # type: ignore[attr-defined]
    return error


def check_batch_size(batch_size: int) -> None:
    """Refuse a global batch smaller than the number of processes: each rank needs rows."""
    w = world_size()
    if batch_size < w:
        raise reported_by_root(
            PyroVAEError(
                f"--batch-size {batch_size} is smaller than the {w} processes: each global batch "
                f"is split across them and every process needs at least one row; use "
                f"--batch-size {w} or more, or fewer processes"
            )
        )


def gather_all(obj: T) -> list[T]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` alone."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def _root(fn: Callable[[], T], share: bool) -> T | None:
    if not is_distributed():
        return fn()
    box: list[Any] = [None]
    if is_root():
        try:
            value = fn()
        except Exception as e:
            dist.broadcast_object_list([("error", first_line(e))], src=0)
            reported_by_root(e)  # rank 0 reports it; every rank has it
            raise
        box = [("ok", value if share else None)]
        dist.broadcast_object_list(box, src=0)
        return value
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise reported_by_root(PyroVAEError(f"rank 0 stopped: {value}"))
    return value


def on_root(fn: Callable[[], T]) -> T | None:
    """``fn()`` on rank 0 alone (writing the run folder), its success or failure told to every
    rank; returns its result on rank 0 and None on the others."""
    return _root(fn, share=False)


def from_root(fn: Callable[[], T]) -> T:
    """``fn()`` computed on rank 0 and its (picklable) result sent to every rank."""
    return _root(fn, share=True)  # type: ignore[return-value]


@contextmanager
def root_context(enter: Callable[[], Any]) -> Iterator[None]:
    """Hold the context manager ``enter()`` returns on rank 0 alone (a run folder's lock) for
    the block; every rank learns whether entering it failed."""
    with ExitStack() as stack:
        on_root(lambda: stack.enter_context(enter()))
        yield


def agree(fn: Callable[[], T], local_root_first: bool = False) -> T:
    """``fn()`` on every rank; if it fails on any, it fails on all: the failing rank raises its
    own error, the others one naming it. ``local_root_first``: the first process of each
    machine runs ``fn`` before the others do (unpacking a dataset into a shared cache once)."""
    if not is_distributed():
        return fn()
    turns = [local_rank() == 0, local_rank() != 0] if local_root_first else [True]
    result: Any = None
    error: Exception | None = None
    for mine in turns:
        if mine:
            try:
                result = fn()
            except Exception as e:
                error = e
        failures = gather_all(None if error is None else first_line(error))
        failed = [(r, message) for r, message in enumerate(failures) if message is not None]
        if error is not None:
            # on rank 0 its own error, or one naming this rank; the others raise one naming it
            raise reported_by_root(error)
        if failed:
            r, message = failed[0]
            raise reported_by_root(PyroVAEError(f"rank {r}: {message}"))
    return result
