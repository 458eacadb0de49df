"""Training on your own data from the command line: a colour 32×32×3 folder with the conv net
and the discretized logistic, a 20×24×1 array with the MLP, the streamed path, bits per
dimension in ``evaluate``, and runs that refuse data whose content changed."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import random_images, write_pngs
from PIL import Image

from pyrovae.cli import main
from pyrovae.runs.folder import read_metrics

QUIET = ["--no-progress", "--hidden", "16", "--batch-size", "16"]


def _colour_folder(tmp_path):
    for k in range(3):
        write_pngs(tmp_path / "colour" / f"class{k}", random_images(12, (3, 32, 32), k))
    return str(tmp_path / "colour")


@pytest.mark.slow
def test_colour_conv_discretized_logistic_run(tmp_path, capsys):
    """2 epochs on 36 RGB PNGs (32×32): config.json records the data; evaluate reports bits per
    dimension −log p / (D ln 2) beside nats; the figures and ``sample`` draw RGB images."""
    run = tmp_path / "run"
    argv = [
        "train",
        "--dataset",
        _colour_folder(tmp_path),
        "--test-fraction",
        "0.25",
        "--net",
        "conv",
        "--pixels",
        "8bit",
        "--likelihood",
        "discretized-logistic",
        "--latent-dim",
        "2",
        "--epochs",
        "2",
        "--run-dir",
        str(run),
        *QUIET,
    ]
    assert main(argv) == 0
    meta = json.loads((run / "config.json").read_text())
    data = meta["data"]
    assert data["kind"] == "folder" and data["path"] == str(tmp_path / "colour")
    assert data["shape"] == [3, 32, 32] and (data["num_train"], data["num_test"]) == (27, 9)
    assert len(data["sha256"]) == 64 and data["streamed"] is False
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2]
    capsys.readouterr()
    assert main(["evaluate", str(run), "--num-samples", "5", "--no-progress"]) == 0
    out = capsys.readouterr().out
    figures = json.loads((run / "evaluation.json").read_text())["evaluations"][-1]
    d = 3 * 32 * 32
    assert figures["test_elbo_bpd"] == pytest.approx(-figures["test_elbo"] / (d * math.log(2)))
    assert figures["log_px_bpd"] == pytest.approx(-figures["log_px"] / (d * math.log(2)))
    assert figures["test_elbo_bpd"] > 0  # log p ≤ 0 for a probability of 8-bit values
    assert f"({figures['test_elbo_bpd']:.4f} bits/dim)" in out
    for name in ("reconstructions", "samples", "manifold", "traversal"):
        assert (run / "figures" / f"{name}.png").is_file(), name
    assert main(["sample", str(run), "--num", "4"]) == 0
    assert Image.open(run / "samples.png").mode in ("RGB", "RGBA")


def test_grey_20x24_array_with_the_mlp_and_streamed_equals_resident(tmp_path):
    """A (N, 20, 24) uint8 array: the MLP trains on 480 values per image; streaming it through
    a DataLoader gives the same metrics as holding it on the device."""
    np.save(tmp_path / "x.npy", random_images(40, (1, 20, 24), 0)[:, 0])
    common = [
        "train",
        "--dataset",
        str(tmp_path / "x.npy"),
        "--test-fraction",
        "0.2",
        "--pixels",
        "grey",
        "--likelihood",
        "continuous-bernoulli",
        "--epochs",
        "2",
        "--latent-dim",
        "3",
        "--no-figures",
        *QUIET,
    ]
    assert main([*common, "--run-dir", str(tmp_path / "a")]) == 0
    assert main([*common, "--run-dir", str(tmp_path / "b"), "--stream", "--workers", "0"]) == 0
    meta = json.loads((tmp_path / "b" / "config.json").read_text())
    assert meta["num_pixels"] == 480 and meta["data"]["streamed"] is True
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    for r in a + b:
        r.pop("seconds")
    assert a == b and len(a) == 2


def test_changed_data_is_refused_unless_allowed(tmp_path, capsys):
    images = random_images(20, (1, 6, 6), 0)
    np.save(tmp_path / "x.npy", images)
    run = str(tmp_path / "run")
    argv = [
        "train",
        "--dataset",
        str(tmp_path / "x.npy"),
        "--test-fraction",
        "0.25",
        "--pixels",
        "grey",
        "--likelihood",
        "gaussian",
        "--epochs",
        "1",
        "--latent-dim",
        "2",
        "--no-figures",
        "--run-dir",
        run,
        *QUIET,
    ]
    assert main(argv) == 0
    images[3, 0, 2, 2] ^= 0xFF
    np.save(tmp_path / "x.npy", images)
    capsys.readouterr()
    for command in (
        ["evaluate", run, "--num-samples", "0"],
        ["train", "--resume", run, "--epochs", "2"],
    ):
        assert main([*command, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is not the data this run was trained on" in err
        assert "--allow-other-data" in err and str(tmp_path / "x.npy") in err
    assert main(["evaluate", run, "--num-samples", "0", "--no-progress", "--allow-other-data"]) == 0
    assert main(["train", "--allow-other-data", "--dataset", str(tmp_path / "x.npy")]) == 2
    assert "--allow-other-data is for --resume" in capsys.readouterr().err


def test_a_shape_the_conv_net_cannot_take_names_the_data(tmp_path, capsys):
    np.save(tmp_path / "flat.npy", random_images(10, (1, 1, 37), 0).reshape(10, 37))
    argv = [
        "train",
        "--dataset",
        str(tmp_path / "flat.npy"),
        "--test-fraction",
        "0.2",
        "--pixels",
        "grey",
        "--likelihood",
        "gaussian",
        "--net",
        "conv",
        "--run-dir",
        str(tmp_path / "run"),
        *QUIET,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'flat.npy'}: the conv encoder needs" in err
    assert "(1, 1, 37)" in err and not (tmp_path / "run").exists()


def test_explicit_data_dir_without_the_files_exits_2(tmp_path, capsys, idx_dir, monkeypatch):
    """$PYROVAE_DATA holds the data, but the --data-dir given does not: exit 2, nothing else
    looked in."""
    monkeypatch.setenv("PYROVAE_DATA", str(idx_dir))
    (tmp_path / "empty").mkdir()
    argv = [
        "train",
        "--dataset",
        "mnist",
        "--no-download",
        "--data-dir",
        str(tmp_path / "empty"),
        "--run-dir",
        str(tmp_path / "run"),
        *QUIET,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"mnist not found (looked in {tmp_path / 'empty'})" in err
    assert not (tmp_path / "run").exists()
