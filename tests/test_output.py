"""What training and evaluation print (issue 26): ``--no-progress`` drops the bar only, the
bar's figure is never stale and costs no device sync, bits per dimension for 8-bit data,
run-folder names that say the layers, and evaluate's labels naming what is measured."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from pyrovae import TrainConfig, build_model_and_guide, fit
from pyrovae.cli import main
from pyrovae.data import load_data
from pyrovae.inference import train as train_module
from pyrovae.inference.estimators import make_estimator
from pyrovae.inference.evaluate import bits_per_dim
from pyrovae.inference.report import epoch_line
from pyrovae.runs.folder import EVALUATION, default_run_dir, read_metrics, run_name

SMALL = {"hidden": (16,), "latent_dim": 2, "dataset": "mnist"}
TINY = ["--dataset", "mnist", "--no-download", "--hidden", "16", "--latent-dim", "2"]
TINY += ["--device", "cpu", "--no-figures", "--no-progress"]


def _fit_parts(idx_dir, pixels="dynamic"):
    data = load_data("mnist", pixels, data_dir=str(idx_dir), download=False)  # 300 train images
    model, guide = build_model_and_guide(TrainConfig(**SMALL), data.num_pixels)
    return model, guide, data


def _train(idx_dir, run, *args: str) -> int:
    return main(["train", *TINY, "--data-dir", str(idx_dir), "--run-dir", str(run), *args])


# ---------------------------------------------------------------- --no-progress and the bar


def test_no_progress_drops_the_bar_and_keeps_the_epoch_lines(tmp_path, idx_dir, capsys):
    assert _train(idx_dir, tmp_path / "run", "--epochs", "2", "--batch-size", "100") == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    records = read_metrics(tmp_path / "run")
    estimator = make_estimator("elbo")
    assert lines[:2] == [epoch_line(r, 2, estimator, 1.0) for r in records]
    assert lines[2] == f"test ELBO {records[-1]['test_elbo']:.2f} nats per image after epoch 2"
    assert lines[3] == f"run folder: {tmp_path / 'run'}" and len(lines) == 4
    assert captured.err == ""  # no bar, no compile-time line


def test_fit_progress_false_alone_stays_silent(idx_dir, capsys):
    """The API's ``progress=False`` keeps meaning "print nothing" (notebooks print their own
    lines from ``on_epoch_end``); ``epoch_lines=True`` adds the lines, still without a bar."""
    model, guide, data = _fit_parts(idx_dir)
    fit(model, guide, data, epochs=1, batch_size=100, compile=False, progress=False)
    assert capsys.readouterr() == ("", "")
    history = fit(
        model,
        guide,
        data,
        epochs=2,
        start_epoch=1,
        batch_size=100,
        compile=False,
        progress=False,
        epoch_lines=True,
    )
    out, err = capsys.readouterr()
    assert out == epoch_line(history[0], 2, make_estimator("elbo"), 1.0) + "\n" and err == ""


class _Recorder:
    """What the bar shows each time it is drawn, and the losses the steps return."""

    def __init__(self):
        self.drawn: list[str] = []
        self.losses: list[tuple[float, int]] = []

    def bar_class(self):
        recorder = self

        class Bar(train_module.tqdm):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **{**kwargs, "mininterval": 0, "miniters": 1})

            def display(self, *args, **kwargs):
                recorder.drawn.append(self.postfix)
                return super().display(*args, **kwargs)

        return Bar

    def step(self, real):
        def step(estimator, model, guide, optimizer, *args, **kwargs):
            loss = real(estimator, model, guide, optimizer, *args, **kwargs)
            self.losses.append((loss, args[0].shape[0]))
            return loss

        return step


def test_the_bar_shows_the_running_mean_up_to_the_step_it_draws(idx_dir, monkeypatch):
    """Each epoch: batches of 128, 128, 44. The bar drawn after step k must show
    −(ℓ_1 + … + ℓ_k)/(n_1 + … + n_k) from the losses the steps returned (it once showed step
    1's value for the whole of an epoch of fewer than 21 steps)."""
    recorder = _Recorder()
    monkeypatch.setattr(train_module, "tqdm", recorder.bar_class())
    monkeypatch.setattr(train_module, "svi_step", recorder.step(train_module.svi_step))
    model, guide, data = _fit_parts(idx_dir)
    history = fit(model, guide, data, epochs=2, batch_size=128, compile=False, progress=True)
    expected = []
    for epoch in range(2):
        steps = recorder.losses[3 * epoch : 3 * epoch + 3]
        for k in range(1, 4):
            total, seen = sum(loss for loss, _ in steps[:k]), sum(b for _, b in steps[:k])
            expected.append(f"ELBO {-total / seen:.2f}")
        assert expected[-1] == f"ELBO {history[epoch]['train_elbo']:.2f}"  # seen = n
    # drawn: when a bar opens (no figure yet), after each step, and when it closes (leave=False
    # clears it, with the last figure once more): compared without repeats
    assert _without_repeats([text for text in recorder.drawn if text]) == _without_repeats(expected)


def _without_repeats(texts: list[str]) -> list[str]:
    return [t for i, t in enumerate(texts) if i == 0 or t != texts[i - 1]]


def test_the_bar_adds_no_device_sync(idx_dir, monkeypatch):
    """The bar formats the floats the steps already return: a run with the bar reads exactly as
    many tensors back to the host (``.item()``, ``float()``, formatting) as one without."""
    counts = {"n": 0}
    for name in ("item", "__float__", "__format__", "tolist"):
        real = getattr(torch.Tensor, name)

        def counted(self, *args, _real=real, **kwargs):
            counts["n"] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    reads = []
    for progress in (False, True):
        model, guide, data = _fit_parts(idx_dir)
        counts["n"] = 0
        fit(model, guide, data, epochs=1, batch_size=20, compile=False, progress=progress)
        reads.append(counts["n"])
    assert reads[0] > 0 and reads[1] == reads[0]


# ---------------------------------------------------------------- bits per dimension


def test_bits_per_dim_is_minus_log_p_over_d_ln_2():
    # 784 values at 3 bits each: −log p = 3 · 784 · ln 2 nats
    assert bits_per_dim(-3 * 784 * math.log(2), 784) == pytest.approx(3.0, rel=1e-15)
    assert bits_per_dim(-5000.0, 3072) == pytest.approx(5000 / 3072 / 0.6931471805599453)


def test_the_epoch_line_adds_bits_per_dim_to_the_test_elbo_only():
    record = {"epoch": 2, "train_elbo": -100.0, "test_elbo": -101.0, "test_recon": -90.0}
    record |= {"test_kl": 11.0, "seconds": 1.25, "test_elbo_bpd": 0.18586}
    elbo = make_estimator("elbo")
    assert epoch_line(record, 10, elbo, 1.0) == (
        "epoch 2/10: train ELBO -100.00, test ELBO -101.00 nats, 0.1859 bits/dim (1.2 s)"
    )
    # the autoencoder's figure is the reconstruction term, no bound: no bits/dim for it
    assert "bits/dim" not in epoch_line(record, 10, elbo, 0.0)


def test_8bit_training_prints_bits_per_dim_as_evaluate_computes_them(tmp_path, idx_dir, capsys):
    run = tmp_path / "run"
    pixels = ["--pixels", "8bit", "--likelihood", "discretized-logistic"]
    assert _train(idx_dir, run, *pixels, "--epochs", "2", "--batch-size", "100") == 0
    out = capsys.readouterr().out.splitlines()
    records = read_metrics(run)
    for r in records:  # by hand: D = 28·28 values per image
        assert r["test_elbo_bpd"] == pytest.approx(-r["test_elbo"] / (784 * math.log(2)), 1e-12)
    bits = [f"{r['test_elbo_bpd']:.4f}" for r in records]
    assert f"test ELBO {records[0]['test_elbo']:.2f} nats, {bits[0]} bits/dim (" in out[0]
    assert out[0].startswith("epoch 1/2: train ELBO ") and f", {bits[1]} bits/dim (" in out[1]
    test_elbo = f"{records[-1]['test_elbo']:.2f}"
    assert out[2] == f"test ELBO {test_elbo} nats per image ({bits[1]} bits/dim) after epoch 2"
    argv = ["evaluate", str(run), "--data-dir", str(idx_dir), "--no-download", "--no-progress"]
    assert main([*argv, "--num-samples", "0"]) == 0
    figures = json.loads((run / EVALUATION).read_text())["evaluations"][-1]
    assert figures["test_elbo_bpd"] == pytest.approx(records[-1]["test_elbo_bpd"], rel=1e-6)


def test_binary_pixels_stay_in_nats(tmp_path, idx_dir, capsys):
    assert _train(idx_dir, tmp_path / "run", "--epochs", "1", "--batch-size", "100") == 0
    assert "bits/dim" not in capsys.readouterr().out
    assert "test_elbo_bpd" not in read_metrics(tmp_path / "run")[0]


# ---------------------------------------------------------------- run-folder names


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"latent_dim": (20, 10)}, "fashion-mnist-elbo-latent-20-10"),
        ({"latent_dim": (100, 50, 20)}, "fashion-mnist-elbo-latent-100-50-20"),
        (
            {"latent_dim": (4, 3), "estimator": "iwae", "num_particles": 5, "net": "conv"},
            "fashion-mnist-iwae-k5-latent-4-3-net-conv",
        ),
        ({"latent_dim": 20}, "fashion-mnist-elbo"),  # one layer: today's names
        ({"latent_dim": (20,)}, "fashion-mnist-elbo"),
    ],
)
def test_run_names_say_the_stochastic_layers(changes, name, tmp_path):
    config = TrainConfig(**changes)
    assert run_name(config) == name
    assert re.fullmatch(r"\d{8}-\d{6}-" + re.escape(name), default_run_dir(config, tmp_path).name)


def test_a_default_folder_of_a_two_layer_run_is_named_apart(tmp_path, idx_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["train", *TINY, "--data-dir", str(idx_dir), "--epochs", "1", "--train-subset", "50"]
    assert main([*argv, "--latent-dim", "3", "2", "--upper-hidden", "8"]) == 0
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.endswith("-mnist-elbo-latent-3-2")


# ---------------------------------------------------------------- evaluate's labels


LABELS = {
    "one layer": ([], "KL(q(z|x) || p(z))", "log p(x)"),
    "label condition": (["--conditional"], "KL(q(z|x,y) || p(z))", "log p(x|y)"),
    "conditional prior": (
        ["--conditional", "--prior", "conditional"],
        "KL(q(z|x,y) || p(z|y))",
        "log p(x|y)",
    ),
    "two layers": (
        ["--latent-dim", "3", "2", "--upper-hidden", "8"],
        "KL(q(z1,z2|x) || p(z1,z2))",
        "log p(x)",
    ),
    "two layers, conditional prior": (
        [
            "--latent-dim",
            "3",
            "2",
            "--upper-hidden",
            "8",
            "--conditional",
            "--prior",
            "conditional",
        ],
        "KL(q(z1,z2|x,y) || p(z1,z2|y))",
        "log p(x|y)",
    ),
}


@pytest.mark.parametrize(("args", "kl", "log_px"), LABELS.values(), ids=LABELS.keys())
def test_evaluate_names_what_it_measures(tmp_path, idx_dir, capsys, args, kl, log_px):
    run = tmp_path / "run"
    assert _train(idx_dir, run, "--epochs", "1", "--train-subset", "60", *args) == 0
    capsys.readouterr()
    argv = ["evaluate", str(run), "--data-dir", str(idx_dir), "--no-progress", "--no-download"]
    assert main([*argv, "--num-samples", "4", "--test-subset", "10"]) == 0
    out = capsys.readouterr().out.splitlines()
    figures = json.loads((run / EVALUATION).read_text())["evaluations"][-1]
    assert (figures["kl_of"], figures["log_px_of"]) == (kl, log_px)
    assert f"  {kl:20s} {figures['test_kl']:.3f}" in out
    assert any(line.startswith(f"  {log_px:20s} {figures['log_px']:.3f} ± ") for line in out)
    others = {k for _, k, p in LABELS.values()} | {p for *_, p in LABELS.values()}
    for label in others - {kl, log_px}:
        assert not any(line.startswith(f"  {label} ") for line in out), label


def test_a_group_summary_names_what_it_measures(tmp_path, idx_dir, capsys):
    group = tmp_path / "group"
    args = ["--epochs", "1", "--train-subset", "40", "--conditional", "--seeds", "1", "2"]
    assert _train(idx_dir, group, *args) == 0
    capsys.readouterr()
    argv = ["evaluate", str(group), "--data-dir", str(idx_dir), "--no-progress", "--no-download"]
    assert main([*argv, "--num-samples", "4", "--test-subset", "10"]) == 0
    out = capsys.readouterr().out
    summary = out[out.index("mean ± sd over 2 seeds") :]
    assert "  KL(q(z|x,y) || p(z)) " in summary and "  log p(x|y)" in summary
    assert "KL(q(z|x) || p(z))" not in out and "log p(x) " not in out


# ---------------------------------------------------------------- a clone named pyrovae


SHADOW_SCRIPT = """\
import site, sys
site.addsitedir(sys.argv[1])  # the installed wheel's top-level files, .pth files processed
from pyrovae import TrainConfig
import pyrovae
print(pyrovae.__file__)
"""


@pytest.mark.slow
def test_an_editable_install_is_not_shadowed_by_the_clone_beside_a_script(tmp_path):
    """A script in the folder that holds the clone, itself named ``pyrovae``: Python's search
    finds the clone as a namespace package (it has no ``__init__.py``) before an import hook
    that setuptools' editable install appends for a flat layout is asked, and ``from pyrovae
    import TrainConfig`` fails with "(unknown location)". With ``package-dir`` named in
    pyproject.toml the editable wheel holds a plain path line instead, which Python's search
    itself reaches. The wheel is built here with setuptools' PEP 660 hook and its files put
    where an installer would (``site.addsitedir`` processes the .pth)."""
    pytest.importorskip("setuptools")
    root = Path(__file__).resolve().parent.parent
    clone = tmp_path / "pyrovae"  # the clone, under its default name
    clone.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, clone / name)
    shutil.copytree(root / "pyrovae", clone / "pyrovae", ignore=shutil.ignore_patterns("*.pyc"))
    build = "from setuptools import build_meta; print(build_meta.build_editable(sys.argv[1]))"
    out = subprocess.run(
        [sys.executable, "-c", f"import sys; {build}", str(tmp_path / "wheel")],
        cwd=clone,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()[-1]
    site_dir = tmp_path / "site"
    with zipfile.ZipFile(tmp_path / "wheel" / out) as wheel:
        top = [n for n in wheel.namelist() if "/" not in n]  # .pth (and a finder, if any)
        wheel.extractall(site_dir, members=top)
    (tmp_path / "script.py").write_text(SHADOW_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(  # -S: none of this interpreter's own installs (this very clone's)
        [sys.executable, "-S", str(tmp_path / "script.py"), str(site_dir)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stderr.splitlines()[-1:]
    assert run.stdout.strip() == str(clone / "pyrovae" / "__init__.py")
