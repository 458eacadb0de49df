"""What a newcomer reads: ``--help`` listing every registry's entries with a one-line
description, readable defaults, run-folder names that tell runs apart, clear device errors."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch

from pyrovae import TrainConfig
from pyrovae.cli import build_parser, main
from pyrovae.core.errors import PyroVAEError
from pyrovae.core.registry import describe
from pyrovae.core.runtime import resolve_device
from pyrovae.inference.estimators import ESTIMATORS, make_estimator
from pyrovae.inference.report import epoch_line
from pyrovae.runs.folder import default_run_dir, run_name

REGISTRY_FIELDS = [f for f in dataclasses.fields(TrainConfig) if f.metadata["choices"] is not None]


def _help(capsys, *command: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    return re.sub(r"\s+", " ", capsys.readouterr().out)  # the text, whatever the wrapping


def test_the_registries_behind_the_flags_are_all_listed():
    names = {f.name for f in REGISTRY_FIELDS}
    assert {"likelihood", "guide", "prior", "net", "estimator", "dataset", "pixels"} <= names


@pytest.mark.parametrize("field", REGISTRY_FIELDS, ids=lambda f: f.name)
def test_every_registry_entry_has_a_one_line_description(field):
    for name, entry in field.metadata["choices"].items():
        text = describe(entry)
        assert 10 <= len(text) <= 80, f"{field.name} {name!r}: {text!r}"
        assert "\n" not in text and not text.endswith(".")


@pytest.mark.parametrize("field", REGISTRY_FIELDS, ids=lambda f: f.name)
def test_train_help_lists_each_choice_with_its_description(field, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    text = _help(capsys, "train")
    flag = "--" + field.name.replace("_", "-")
    section = text[text.index(f"{flag} NAME ") :]
    assert section.startswith(f"{flag} NAME {field.metadata['help']} (default: {field.default})")
    for name, entry in field.metadata["choices"].items():
        assert f" {name} {describe(entry)} " in section + " "


def test_diagnose_help_lists_the_estimators(capsys):
    text = _help(capsys, "diagnose")
    for name, entry in ESTIMATORS.items():
        assert f" {name} {describe(entry)}" in text


def test_defaults_are_shown_as_typed(capsys):
    text = _help(capsys, "train")
    assert "(default: 400 400)" in text and "(default: 0.9 0.999)" in text
    assert "(400, 400)" not in text and "(default: None)" not in text
    assert "(default: False)" not in text


def test_describe_takes_a_description_then_the_own_docstring():
    class Described:
        """Docstring line."""

        description = "the description"

    class Documented:
        """First line.

        More."""

    class Bare(Documented):
        pass

    def documented():
        """A function's first line."""

    assert describe(Described) == "the description"
    assert describe(Documented) == "First line"
    assert describe(Bare) == ""  # not its base class's docstring
    assert describe(documented) == "A function's first line"
    assert describe((Documented, Documented)) == ""  # not tuple's docstring


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({}, "fashion-mnist-elbo"),
        ({"estimator": "iwae", "num_particles": 5}, "fashion-mnist-iwae-k5"),
        (
            {"guide": "flow", "prior": "mixture", "net": "conv", "dataset": "mnist"},
            "mnist-elbo-guide-flow-prior-mixture-net-conv",
        ),
        (
            {"pixels": "grey", "likelihood": "laplace", "guide": "laplace"},
            "fashion-mnist-elbo-likelihood-laplace-guide-laplace",
        ),
    ],
)
def test_run_names_name_what_differs_from_the_default(changes, name, tmp_path):
    config = TrainConfig(**changes)
    assert run_name(config) == name
    path = default_run_dir(config, tmp_path)
    assert path.parent == tmp_path
    assert re.fullmatch(r"\d{8}-\d{6}-" + re.escape(name), path.name)


def test_a_taken_default_folder_gets_a_suffix(tmp_path, monkeypatch):
    monkeypatch.setattr("time.strftime", lambda fmt: "20260101-000000")
    config = TrainConfig(estimator="iwae", num_particles=5)
    first = default_run_dir(config, tmp_path)
    first.mkdir()
    assert default_run_dir(config, tmp_path) == tmp_path / f"{first.name}-1"


def test_help_parses_every_flag_it_generates():
    parser = build_parser()
    args = parser.parse_args(["train", "--hidden", "400", "400", "--adam-betas", "0.9", "0.99"])
    assert args.hidden == [400, 400] and args.adam_betas == [0.9, 0.99]


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("mps", "--device mps: Apple's MPS backend is not supported"),
        ("tpu", "unknown device 'tpu'; use cpu, cuda, cuda:N or auto"),
        ("cuda:x", "unknown device 'cuda:x'"),
    ],
)
def test_unsupported_devices_are_refused_in_one_line(device, message, tmp_path, capsys):
    with pytest.raises(PyroVAEError, match=re.escape(message)):
        TrainConfig(device=device)
    assert main(["train", "--device", device, "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "r").exists()


def test_a_gpu_index_past_the_visible_gpus_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(PyroVAEError, match=r"--device cuda:2: there is no such GPU; 2 visible "):
        resolve_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(PyroVAEError, match=r"no such GPU; 1 visible \(cuda:0\)"):
        resolve_device("cuda:1")


def test_cuda_without_a_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PyroVAEError, match="--device cuda:1 asked for, but no CUDA GPU is visible"):
        resolve_device("cuda:1")


# ---------------------------------------------------------------- what training prints


RECORD = {"epoch": 2, "train_elbo": -100.0, "test_elbo": -101.0, "test_recon": -90.0}
RECORD |= {"test_kl": 11.0, "seconds": 1.25}


@pytest.mark.parametrize(
    ("estimator", "k", "beta", "train", "test"),
    [
        ("elbo", 1, 1.0, "train ELBO -100.00", "test ELBO -101.00"),
        ("iwae", 5, 1.0, "train bound L_5 -100.00", "test ELBO -101.00"),
        ("iwae-dreg", 50, 1.0, "train bound L_50 -100.00", "test ELBO -101.00"),
        ("analytic-kl", 1, 4.0, "train β-weighted ELBO -100.00", "test ELBO -101.00"),
        ("elbo", 1, 0.0, "train recon -100.00", "test recon -90.00"),
    ],
)
def test_the_epoch_line_names_what_was_trained(estimator, k, beta, train, test):
    line = epoch_line(RECORD, 10, make_estimator(estimator, k), beta)
    assert line == f"epoch 2/10: {train}, {test} nats (1.2 s)"


def test_training_output_names_the_bound_and_never_says_elbo_for_an_autoencoder(
    tmp_path, idx_dir, capsys
):
    small = ["--dataset", "mnist", "--hidden", "8", "--latent-dim", "2", "--train-subset", "50"]
    small += ["--batch-size", "25", "--device", "cpu", "--data-dir", str(idx_dir), "--no-figures"]
    assert main(["train", *small, "--autoencoder", "--run-dir", str(tmp_path / "ae")]) == 0
    out = capsys.readouterr().out
    assert "ELBO" not in out and "train recon" in out
    assert "test recon" in out.splitlines()[-2]
    # evaluate: a point mass has no KL and no density to importance-sample log p(x) with
    data = ["--data-dir", str(idx_dir), "--no-progress", "--device", "cpu"]
    assert main(["evaluate", str(tmp_path / "ae"), *data]) == 0
    out = capsys.readouterr().out
    assert "ELBO" not in out and "KL" not in out and "effective samples" not in out
    assert "−log p(z) at code" in out and "log p(x)             n/a" in out
    record = json.loads((tmp_path / "ae" / "evaluation.json").read_text())["evaluations"][-1]
    assert record["point_mass"] is True and "log_px" not in record
    args = ["--estimator", "iwae", "--num-particles", "3", "--run-dir", str(tmp_path / "iwae")]
    assert main(["train", *small, *args]) == 0
    out = capsys.readouterr().out
    assert "epoch 1/10: train bound L_3 " in out
    assert main(["evaluate", str(tmp_path / "iwae"), *data]) == 0  # a VAE: all of it
    out = capsys.readouterr().out
    assert "test ELBO" in out and "KL(q(z|x) || p(z))" in out and "effective samples" in out


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_index_puts_the_run_on_that_gpu(tmp_path, idx_dir):
    index = torch.cuda.device_count() - 1
    run = tmp_path / "run"
    args = ["train", "--dataset", "mnist", "--hidden", "8", "--latent-dim", "2", "--epochs", "1"]
    args += ["--train-subset", "50", "--data-dir", str(idx_dir), "--run-dir", str(run)]
    assert main([*args, "--device", f"cuda:{index}", "--no-figures", "--no-progress"]) == 0
    assert json.loads((run / "config.json").read_text())["device"] == f"cuda:{index}"
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    weights = list(state["model"].values())
    assert {w.device for w in weights} == {torch.device("cuda", index)}
