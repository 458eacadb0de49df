"""Every notebook runs: executed in smoke mode (``CI`` set for the kernel) on a temporary copy,
a failing cell fails the test; the committed file is never rewritten. A coverage check keeps
the list complete, and each committed notebook must hold the outputs of a full run.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"

# Every notebooks/*.ipynb, in order; test_every_notebook_is_listed fails until a new one is added.
NOTEBOOKS = [
    "01_reparameterization_trick.ipynb",
    "02_training_a_vae.ipynb",
    "03_comparing_estimators.ipynb",
    "04_guides_and_likelihoods.ipynb",
    "05_conditional_and_beta_vae.ipynb",
    "06_linear_gaussian.ipynb",
    "07_discrete_latents.ipynb",
]


def _load_executor():
    """notebooks/execute.py (not a package): the same kernel setup as the committed full runs."""
    spec = importlib.util.spec_from_file_location("notebook_execute", NOTEBOOK_DIR / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


executor = _load_executor()


def _stdout(nb: nbformat.NotebookNode) -> str:
    return "".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "stream" and out.name == "stdout"
    )


def test_every_notebook_is_listed():
    found = {p.name for p in NOTEBOOK_DIR.glob("*.ipynb")}
    assert found == set(NOTEBOOKS), "add new notebooks to NOTEBOOKS (and drop removed ones)"


def test_the_kernel_is_this_interpreter(tmp_path):
    code = "import os, sys; print(sys.executable, os.environ.get('OMP_NUM_THREADS'), os.getcwd())"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    executor.execute(nb, smoke=True, cwd=tmp_path, timeout=60)
    assert _stdout(nb).split() == [sys.executable, "1", str(tmp_path)]


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_smoke_mode(name, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)  # a copy in memory: never written back
    try:
        executor.execute(nb, smoke=True, cwd=tmp_path, timeout=600)
    finally:
        nbformat.write(nb, tmp_path / name)  # what ran, for a look after a failure
    assert "SMOKE = True" in _stdout(nb)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_holds_a_full_run(name):
    """Run top to bottom in one kernel, in full mode, without errors, with figures to see."""
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), (
        f"re-run it: python notebooks/execute.py {name}"
    )
    outputs = [out for c in code for out in c.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    assert any("image/png" in out.get("data", {}) for out in outputs), "no figure in the outputs"
    assert "SMOKE = False" in _stdout(nb), "the committed outputs come from a smoke run"
