"""The docs' examples run as pasted: every fenced python block of README.md and of every page
under docs/ runs in a fresh interpreter, and every ``pyrovae`` command of their bash blocks
parses (with its settings valid).

The blocks run unchanged; the only difference from a reader's run is the data: a tiny dataset
the test writes and names through ``$PYROVAE_DATA``, the first place pyrovae looks for data.
The site itself is built by ``make docs`` (warnings are errors), which ``.ci/run`` calls.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_dataset

from pyrovae import TrainConfig
from pyrovae.cli import build_parser
from pyrovae.runs.config import preset_config

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md")), *sorted(DOCS.glob("[!_]*/*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(language: str) -> list[tuple[str, str]]:
    """(page, body) of each fenced block in ``language``, page by page."""
    return [
        (page.relative_to(ROOT).as_posix(), body)
        for page in PAGES
        for lang, body in FENCE.findall(page.read_text())
        if lang == language
    ]


PYTHON = blocks("python")


def test_the_pages_have_their_python_blocks():
    pages = {page for page, _ in PYTHON}
    assert len(PYTHON) >= 10
    assert {"README.md", "docs/guide/python-api.md", "docs/guide/evaluation.md"} <= pages


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("readme-data")
    write_dataset(folder, n_train=2048, n_test=100)  # the data-parallel block takes 2048
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(
    "index", range(len(PYTHON)), ids=[f"{page}-{i + 1}" for i, (page, _) in enumerate(PYTHON)]
)
def test_python_block_runs_as_pasted(index, tiny_data, tmp_path):
    page, code = PYTHON[index]
    env = {
        **os.environ,
        "PYROVAE_DATA": str(tiny_data),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "MPLBACKEND": "Agg",
    }
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,  # runs/ and figures go here
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{page}:\n{code}\n{result.stderr[-3000:]}"


def _commands() -> list[list[str]]:
    """Each ``pyrovae …`` command in the bash blocks (``a && b`` is two), comments dropped."""
    commands = []
    for _, block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():  # continued lines joined
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words[:1] == ["pyrovae"]:
                    commands.append(words[1:])
                elif words[:1] == ["torchrun"] and "pyrovae" in words:  # … -m pyrovae train …
                    commands.append(words[words.index("pyrovae") + 1 :])
    return commands


def test_the_bash_blocks_have_their_commands():
    assert len(_commands()) >= 25
    assert {c[0] for c in _commands()} == {
        "train",
        "evaluate",
        "diagnose",
        "sample",
        "plot",
        "gaps",
    }


@pytest.mark.parametrize(
    "command",
    [c for c in _commands() if "--help" not in c],  # help: tested in test_help.py
    ids=" ".join,
)
def test_each_command_parses_with_valid_settings(command, tmp_path, monkeypatch):
    # the "Your own data" examples name a user's folders and files: make them exist (empty: a
    # dataset's kind is told from its path; its content is read only when training)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for folder in ("photos", "digits"):
        (tmp_path / folder).mkdir()
    for name in ("images.npy", "data.npz", "big.pt"):
        (tmp_path / name).write_bytes(b"")
    args = build_parser().parse_args(command)
    if command[0] == "train" and args.resume is None and args.config is None:
        fields = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
        preset_config(args.preset, **fields) if args.preset else TrainConfig(**fields)


BENCHMARK_COMMAND = re.compile(r"python benchmarks/(\w+)\.py((?:[^`\n\\]|\\\n)*)")


def _benchmark_commands() -> list[tuple[str, list[str]]]:
    """Each ``python benchmarks/<script>.py …`` in the pages and BENCHMARKS.md, fenced or inline."""
    found = []
    for doc in [*PAGES, ROOT / "BENCHMARKS.md"]:
        for script, rest in BENCHMARK_COMMAND.findall(doc.read_text()):
            found.append((script, shlex.split(rest.replace("\\\n", " "), comments=True)))
    return found


def test_the_docs_have_their_benchmark_commands():
    assert {"compare", "reproduce_iwae", "gpu_check"} <= {s for s, _ in _benchmark_commands()}


@pytest.mark.parametrize(
    "script, args", _benchmark_commands(), ids=lambda v: v if isinstance(v, str) else " ".join(v)
)
def test_each_benchmark_command_parses(script, args, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the scripts import their siblings
    module = __import__(script)
    module.parse_args(args)  # argparse exits 2 on an unknown flag or a bad value
