"""Execute the notebooks with this interpreter's kernel; in place, in full mode, by default.

    python notebooks/execute.py                       # every notebooks/*.ipynb
    python notebooks/execute.py 01_reparameterization_trick.ipynb

A notebook reads ``SMOKE = "CI" in os.environ``: the full run (what is committed, so a reader
sees the figures without running anything) unsets ``CI``; the test suite sets it and executes a
temporary copy (``tests/test_notebooks.py``). The kernel is this interpreter (ipykernel's own
spec, never a ``python3`` kernel found on the Jupyter path), with ``OMP_NUM_THREADS`` 1 unless
the caller set it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent
KERNEL = "python3"


def kernel_env(smoke: bool) -> dict[str, str]:
    """The kernel's environment: ours, with ``CI`` set exactly in smoke mode."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("CI", None)
    if smoke:
        env["CI"] = "1"
    return env


def kernel_manager() -> KernelManager:
    """A manager for ipykernel's native spec, whose argv is ``sys.executable``: with no kernel
    folders to search, a user's ``python3`` kernel cannot shadow this interpreter."""
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))


def execute(nb: nbformat.NotebookNode, smoke: bool, cwd: Path = NOTEBOOKS, timeout: int = 1800):
    """Run every cell of ``nb`` (modified in place, also returned); a failing cell raises
    ``nbclient.exceptions.CellExecutionError``."""
    client = NotebookClient(
        nb,
        km=kernel_manager(),
        timeout=timeout,
        record_timing=False,  # no per-cell timestamps: a re-run changes only what it computed
        resources={"metadata": {"path": str(cwd)}},
    )
    # the client shuts down only kernels it created itself unless told to (cleanup_kc)
    client.execute(env=kernel_env(smoke), cleanup_kc=True)
    return strip_volatile(nb)


def strip_volatile(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop metadata that changes on every run without meaning anything to a reader."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("ExecuteTime", None)
    nb.metadata.pop("widgets", None)
    nb.metadata.kernelspec = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", help="notebooks (file names in notebooks/ or paths); default: all"
    )
    parser.add_argument("--smoke", action="store_true", help="CI mode (then nothing is written)")
    args = parser.parse_args(argv)
    paths = [_resolve(n) for n in args.names] or sorted(NOTEBOOKS.glob("*.ipynb"))
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        execute(nb, smoke=args.smoke, cwd=path.parent)
        seconds = time.perf_counter() - start
        if not args.smoke:
            nbformat.write(nb, path)
        size = path.stat().st_size / 1e6
        mode = "smoke, not written" if args.smoke else f"written, {size:.2f} MB"
        print(f"{path.name}: {seconds:.1f} s ({mode})", flush=True)
    return 0


def _resolve(name: str) -> Path:
    path = Path(name)
    if not path.exists():
        path = NOTEBOOKS / name
    if not path.exists():
        sys.exit(f"no notebook {name!r} (looked in the current folder and {NOTEBOOKS})")
    return path


if __name__ == "__main__":
    sys.exit(main())
