"""Faults of ``evaluate`` and of the arguments (issue #21, items 5, 6 and 11).

Every integer flag of every verb out of its declared range, the same values from a config file
or the Python API, a K so large that log p(x) would run for years, a config "file" without end
(``/dev/zero``) and a disk that fills up while ``evaluation.json`` is written: each is one line
on stderr and exit 2, before any work, and ``evaluate`` has shown its figures before a write
that fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import io
import itertools
import json
import os
import re
import shutil
import tracemalloc
from pathlib import Path

import pytest
import torch
from conftest import write_dataset
from test_faults import _args, _err

import pyrovae.runs.folder
from pyrovae import TrainConfig, sample_run
from pyrovae.cli import build_parser, main
from pyrovae.core.errors import PyroVAEError
from pyrovae.core.files import atomic_write
from pyrovae.core.ranges import IntRange
from pyrovae.inference import marginal
from pyrovae.runs.config_file import MAX_BYTES, read_config_file
from pyrovae.runs.evaluate import MAX_DRAWS
from pyrovae.runs.folder import CONFIG, EVALUATION, read_evaluations
from pyrovae.runs.seeds import seed_runs

VALUES = (-1, 2**32, 10**23)  # below every range, past 32 bits, past 64 bits


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(IDX folder, a one-epoch run) for the module; tests that write into it copy it."""
    root = tmp_path_factory.mktemp("trained")
    write_dataset(root / "idx")
    assert main(_args(root / "idx", root / "run", "--epochs", "1")) == 0
    return root / "idx", root / "run"


def _data(idx: Path) -> list[str]:
    return ["--data-dir", str(idx), "--no-download", "--no-progress"]


# ---- item 11: every integer argument within its range, at parse time -----------------------


def _integer_flags() -> list[tuple[str, argparse.Action]]:
    """(verb, action) of every option of every verb whose values are whole numbers."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [
        (verb, action)
        for verb, parser in sub.choices.items()
        for action in parser._actions
        if action.type is int or isinstance(action.type, IntRange)
    ]


def test_every_integer_flag_declares_its_range():
    flags = _integer_flags()
    assert {verb for verb, _ in flags} == {"train", "evaluate", "diagnose", "gaps", "sample"}
    plain = [f"{verb} {a.option_strings[0]}" for verb, a in flags if a.type is int]
    assert not plain, f"integer flags without an IntRange: {plain}"


def _out_of_range(bounds: IntRange, value: int) -> bool:
    return value < bounds.low or (bounds.high is not None and value > bounds.high)


CASES = [
    pytest.param(verb, action.option_strings[0], action.type, value, id=f"{verb}{flag}={value}")
    for verb, action in _integer_flags()
    for value in VALUES
    if _out_of_range(action.type, value)
    for flag in [action.option_strings[0]]
]


@pytest.mark.parametrize("verb,flag,bounds,value", CASES)
def test_an_integer_flag_out_of_its_range_is_one_line_before_any_work(
    tmp_path, capsys, verb, flag, bounds, value
):
    """The message says the range the flag declares; nothing is read, created or trained (the
    run folder and data folder named do not exist: without the check their absence, or a
    traceback, would be the error)."""
    target, data = tmp_path / "new", _data(tmp_path / "no-data")
    argv = {
        "train": ["train", "--dataset", "mnist", "--run-dir", str(target), *data],
        "evaluate": ["evaluate", str(target), *data],
        "diagnose": ["diagnose", str(target), "--estimators", "elbo", "--num-particles", "1"],
        "sample": ["sample", str(target)],
        "gaps": ["gaps", str(target), *data],
    }[verb]
    assert main([*argv, flag, str(value)]) == 2
    err = _err(capsys)
    if value < bounds.low:
        assert f"{flag} must be at least {bounds.low}, got {value}" in err
    else:
        assert f"{flag} must be at most {bounds.high} ({bounds.why}), got {value}" in err
    assert not target.exists() and not (tmp_path / "no-data").exists()


def test_a_non_integer_is_refused_by_the_parser(capsys):
    for argv in (["evaluate", "r", "--num-samples", "1e21"], ["sample", "r", "--seed", "0.5"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1
        assert f"argument {argv[2]}: {argv[3]!r} is not a whole number" in err


SETTINGS = [
    pytest.param(f, value, id=f"{f.name}={value}")
    for f in dataclasses.fields(TrainConfig)
    if f.metadata["range"] is not None
    for value in VALUES
    if _out_of_range(f.metadata["range"], value)
]


@pytest.mark.parametrize("field,value", SETTINGS)
def test_a_config_file_or_the_api_out_of_range_names_the_setting(tmp_path, capsys, field, value):
    """The same ranges as the flags: a config file's value names the file and the setting (a
    JSON integer has no size limit), the Python API's the flag."""
    file = tmp_path / "c.json"
    plain = [value] if "tuple" in str(field.type) else value  # one of several sizes
    file.write_text(json.dumps({field.name: plain}))
    with pytest.raises(PyroVAEError, match=re.escape(f"--config {file}: '{field.name}' must be")):
        read_config_file(file)
    assert main(["train", "--config", str(file), "--run-dir", str(tmp_path / "r")]) == 2
    assert f"'{field.name}' must be at" in _err(capsys) and not (tmp_path / "r").exists()
    flag = "--" + field.name.replace("_", "-")
    with pytest.raises(PyroVAEError, match=f"{flag} must be at"):
        TrainConfig(**{field.name: plain})


def test_sample_through_the_api_checks_its_seed_and_number(trained):
    _, run = trained
    for kwargs, message in (({"seed": -1}, "--seed must be at least 0"), ({"num": 0}, "--num")):
        with pytest.raises(PyroVAEError, match=message):
            sample_run(run, **kwargs)


@pytest.mark.parametrize(
    "flags",
    [["--hidden", "2147483647", "2147483647"], ["--image-size", "2147483647"]],
    ids=["hidden", "image-size"],
)
def test_sizes_in_range_whose_product_passes_any_memory_are_one_line(
    trained, tmp_path, capsys, flags
):
    """Each size is within its range, but a weight matrix or an image of (2³¹ − 1)² floats has
    more bytes than 2⁶³: torch's overflow is told as memory it cannot have, not a traceback."""
    idx, _ = trained
    assert main(_args(idx, tmp_path / "r", *flags)) == 2
    assert "out of memory (Storage size calculation overflowed" in _err(capsys)


# ---- item 5: a huge K, and a config file without end -----------------------------------------


def test_chunk_sizes_are_made_one_at_a_time(trained, monkeypatch):
    """K = 10⁹ in chunks of 500: a list of the sizes would be 2·10⁶ pointers (16 MB) before the
    first draw; Python's allocations up to the first draw stay under 1 MB."""
    assert list(marginal.chunk_sizes(1234, 500)) == [500, 500, 234]
    assert list(itertools.islice(marginal.chunk_sizes(10**21, 500), 3)) == [500] * 3

    class FirstDraw(Exception):
        pass

    def first_draw(*args, **kwargs):
        raise FirstDraw

    monkeypatch.setattr(marginal, "draw_particles", first_draw)
    x = torch.zeros(2, 784)
    tracemalloc.start()
    try:
        with pytest.raises(FirstDraw):
            marginal.log_marginal_likelihood(None, None, x, num_samples=10**9)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10**6, peak


def _refused_before_the_long_part(monkeypatch):
    def long_part(*args, **kwargs):
        raise AssertionError("log p(x) started")

    monkeypatch.setattr("pyrovae.runs.evaluate.log_marginal_likelihood", long_part)


def test_a_k_past_the_cap_is_refused_in_one_line_quoting_the_estimate(
    trained, capsys, monkeypatch
):
    """K = 10²³ on 100 test images: 10²⁵ draws of z; refused after one chunk is timed, before
    the ELBO or log p(x), with how long it would take and how to run it anyway."""
    idx, run = trained
    _refused_before_the_long_part(monkeypatch)
    before = run.joinpath(EVALUATION).exists()
    assert main(["evaluate", str(run), *_data(idx), "--num-samples", str(10**23)]) == 2
    err = _err(capsys)
    assert f"log p(x) with K={10**23} on 100 test images is 1e+25 draws of z: about " in err
    assert " years here (one chunk timed), " in err and " of particles at a time; " in err
    assert f"more than --max-draws {MAX_DRAWS:,} allows" in err
    assert f"pass --max-draws {10**25} to run it" in err
    assert run.joinpath(EVALUATION).exists() == before


def test_the_cap_is_exact_and_the_estimate_is_told_first(trained, tmp_path, capsys):
    """20 images × K = 5 = 100 draws: --max-draws 99 refuses, 100 runs (and says its estimate
    on stderr before the figures on stdout)."""
    idx, run = trained
    argv = ["evaluate", str(run), *_data(idx), "--test-subset", "20", "--num-samples", "5"]
    assert main([*argv, "--max-draws", "99"]) == 2
    err = _err(capsys)
    assert "is 100 draws of z" in err and "pass --max-draws 100 to run it" in err
    assert main([*argv, "--max-draws", "100"]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("pyrovae: note: log p(x) with K=5 on 20 test images is 100 draws of z")
    assert "log p(x)" in out


def test_a_config_without_end_is_refused_in_one_line(tmp_path, capsys):
    """A settings file is read up to MAX_BYTES: a file of exactly that size is read, one byte
    more is refused, and /dev/zero (endless) is refused the same way."""
    settings = '{"epochs": 1}'
    file = tmp_path / "c.json"
    file.write_text(settings + " " * (MAX_BYTES - len(settings)))
    assert read_config_file(file) == {"epochs": 1}
    file.write_text(settings + " " * (MAX_BYTES - len(settings) + 1))
    for path in (file, Path("/dev/zero")):
        assert main(["train", "--config", str(path), "--run-dir", str(tmp_path / "r")]) == 2
        err = _err(capsys)
        assert f"--config {path} is larger than {MAX_BYTES // 1024} KiB" in err
    assert not (tmp_path / "r").exists()


def test_a_runs_config_json_without_end_is_named_as_damaged(trained, tmp_path, capsys):
    """A run's own config.json is read up to the same bound: grown past it (valid JSON padded
    with spaces, which was read in full) or replaced by a link to /dev/zero (which filled
    memory), it is named as damaged, and every verb that reads the run stops in one line."""
    idx, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    config = copy / CONFIG
    original = config.read_text()
    config.write_text(original + " " * (MAX_BYTES + 1 - len(original)))
    for _damage in ("padded", "endless"):  # the second pass: config.json → /dev/zero
        for argv in (["evaluate", str(copy), *_data(idx)], ["plot", str(copy)]):
            assert main(argv) == 2
            err = _err(capsys)
            assert f"{config} is damaged: it is larger than {MAX_BYTES // 1024} KiB" in err
        config.unlink()
        config.symlink_to("/dev/zero")


# ---- item 6: a full disk when evaluation.json is written -------------------------------------


def _full_disk(monkeypatch) -> None:
    """From now on, writing evaluation.json fills the disk half-way through its bytes (as the
    harness's ``enospc-checkpoint`` does for checkpoints)."""

    def write(path, content):
        if path.name != EVALUATION:
            return atomic_write(path, content)

        def half_then_full(f):
            buffer = io.BytesIO()
            content(buffer)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        return atomic_write(path, half_then_full)

    monkeypatch.setattr(pyrovae.runs.folder, "atomic_write", write)


FULL = "the disk is full"


def _figure_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if not line.startswith("written to")]


def test_a_full_disk_at_evaluation_json_loses_no_figure_shown(
    trained, tmp_path, capsys, monkeypatch
):
    """The figures are on stdout before the write fails; the error names the file, the earlier
    evaluation.json is kept whole, no temporary file is left, and evaluating again (the disk
    freed) prints and records the very figures that were shown."""
    idx, trained_run = trained
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    argv = ["evaluate", str(run), *_data(idx), "--test-subset", "20"]
    assert main([*argv, "--num-samples", "5"]) == 0
    kept = (run / EVALUATION).read_bytes()
    capsys.readouterr()
    with monkeypatch.context() as m:
        _full_disk(m)
        assert main([*argv, "--num-samples", "10"]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 2 and err.startswith("pyrovae: note: ")  # the estimate, the error
    assert err.splitlines()[1] == f"pyrovae: error: cannot write {run / EVALUATION}: {FULL}"
    shown = _figure_lines(out)
    assert "(K=10, MC error" in out and "written to" not in out
    assert (run / EVALUATION).read_bytes() == kept and not list(run.glob(".*.tmp"))
    assert main([*argv, "--num-samples", "10"]) == 0
    assert _figure_lines(capsys.readouterr().out) == shown
    assert [e["num_samples"] for e in read_evaluations(run)] == [5, 10]


def test_a_full_disk_in_a_group_shows_each_seeds_figures(tmp_path, capsys, monkeypatch):
    """``evaluate GROUP``: seed-0's figures are shown and written; the disk is full at seed-1's
    evaluation.json, whose figures are shown before the one-line error."""
    idx = tmp_path / "idx"
    write_dataset(idx)
    group = tmp_path / "group"
    assert main(_args(idx, group, "--epochs", "1", "--seeds", "0", "1")) == 0
    first, second = seed_runs(group)
    real = pyrovae.runs.folder.write_evaluation

    def full_at_the_second(path, figures):
        if path == second:
            _full_disk(monkeypatch)
        return real(path, figures)

    monkeypatch.setattr("pyrovae.runs.evaluate.write_evaluation", full_at_the_second)
    capsys.readouterr()
    argv = ["evaluate", str(group), *_data(idx), "--test-subset", "10", "--num-samples", "3"]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.splitlines()[-1] == f"pyrovae: error: cannot write {second / EVALUATION}: {FULL}"
    assert out.count("(K=3, MC error") == 2 and out.index("seed-1:") < out.rindex("(K=3, MC")
    assert (first / EVALUATION).is_file() and not (second / EVALUATION).exists()
