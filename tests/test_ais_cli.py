"""``pyrovae evaluate --method ais|bdmc``: printed, recorded beside importance sampling's
figures, and refused in one line where AIS cannot run or would not fit in memory."""

from __future__ import annotations

import json

import pytest
from conftest import write_dataset

from pyrovae.cli import main
from pyrovae.runs.folder import EVALUATION

SMALL = [
    "--dataset",
    "mnist",
    "--hidden",
    "16",
    "--latent-dim",
    "3",
    "--batch-size",
    "50",
    "--device",
    "cpu",
    "--no-progress",
    "--no-download",
    "--train-subset",
    "100",
    "--no-figures",
    "--epochs",
    "1",
]
AIS = ["--ais-steps", "4", "--chains", "2", "--leapfrog", "2", "--test-subset", "6"]


def _train(root, idx, name, *extra):
    run = root / name
    assert main(["train", *SMALL, "--data-dir", str(idx), "--run-dir", str(run), *extra]) == 0
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(IDX folder, {name: run folder}): a normal-guide run, a two-layer run, a point-mass
    guide (the autoencoder) and a Bernoulli code, each one epoch on 100 tiny images."""
    root = tmp_path_factory.mktemp("ais-cli")
    idx = root / "idx"
    write_dataset(idx)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
        made = {
            "normal": _train(root, idx, "normal"),
            "two-layer": _train(root, idx, "two", "--latent-dim", "3", "2"),
            "delta": _train(root, idx, "delta", "--autoencoder"),
            "bernoulli": _train(
                root,
                idx,
                "bern",
                "--guide",
                "bernoulli",
                "--prior",
                "bernoulli",
                "--estimator",
                "score-function",
            ),
        }
    return idx, made


def _evaluate(idx, run, *extra):
    return main(["evaluate", str(run), "--data-dir", str(idx), "--no-progress", *extra])


def _entries(run):
    return json.loads((run / EVALUATION).read_text())["evaluations"]


def test_ais_and_bdmc_are_printed_and_kept_beside_importance_sampling(runs, capsys):
    idx, made = runs
    run = made["normal"]
    assert _evaluate(idx, run, "--num-samples", "20", "--test-subset", "6") == 0
    assert _evaluate(idx, run, "--method", "ais", *AIS) == 0
    out, err = capsys.readouterr()
    assert "AIS T=4 C=2 L=2 from guide" in out and "HMC acceptance" in out
    assert "AIS with T=4, C=2, L=2 on 6 images: about" in err  # the cost, told first
    assert _evaluate(idx, run, "--method", "bdmc", *AIS) == 0
    out = capsys.readouterr().out
    for line in ("BDMC lower bound", "BDMC upper bound", "BDMC gap", "simulated from the model"):
        assert line in out
    entries = _entries(run)
    assert [e["method"] for e in entries] == ["is", "ais", "bdmc"]
    ais, bdmc = entries[1], entries[2]
    assert (ais["ais_steps"], ais["chains"], ais["leapfrog"], ais["ais_from"]) == (
        4,
        2,
        2,
        "guide",
    )
    assert ais["log_px"] < 0 and 0 <= ais["ais_acceptance"] <= 1
    assert bdmc["bdmc_upper"] - bdmc["bdmc_lower"] == pytest.approx(bdmc["bdmc_gap"])
    # the same settings again replace their entry; other settings are kept
    assert _evaluate(idx, run, "--method", "ais", *AIS) == 0
    assert _evaluate(idx, run, "--method", "ais", *AIS[:-2], "--test-subset", "3") == 0
    methods = [(e["method"], e["num_test"]) for e in _entries(run)]
    assert methods == [("is", 6), ("bdmc", 6), ("ais", 6), ("ais", 3)]


def test_two_stochastic_layers_and_the_prior_start(runs, capsys):
    idx, made = runs
    assert _evaluate(idx, made["two-layer"], "--method", "ais", *AIS) == 0
    assert _evaluate(idx, made["two-layer"], "--method", "bdmc", *AIS) == 0
    assert _evaluate(idx, made["normal"], "--method", "ais", *AIS, "--ais-from", "prior") == 0
    out = capsys.readouterr().out
    assert "from prior" in out


REFUSED = {
    "point mass from its guide": (
        "delta",
        ["--method", "ais"],
        "point mass with no density to anneal from",
    ),
    "bernoulli code": ("bernoulli", ["--method", "bdmc"], "the bernoulli code is discrete"),
}


@pytest.mark.parametrize("name,flags,message", REFUSED.values(), ids=REFUSED.keys())
def test_what_ais_cannot_anneal_is_one_line(runs, capsys, name, flags, message):
    idx, made = runs
    before = (made[name] / EVALUATION).read_bytes() if (made[name] / EVALUATION).exists() else None
    assert _evaluate(idx, made[name], *flags, *AIS) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyrovae: error: ") and err.count("\n") == 1 and message in err
    after = (made[name] / EVALUATION).read_bytes() if (made[name] / EVALUATION).exists() else None
    assert after == before


def test_the_point_mass_guide_gets_a_log_px_from_the_prior(runs, capsys):
    """The autoencoder has no density, so importance sampling skips it; AIS from p(z) does not
    need one."""
    idx, made = runs
    assert _evaluate(idx, made["delta"], "--method", "ais", "--ais-from", "prior", *AIS) == 0
    assert "log p(x)" in capsys.readouterr().out
    assert _entries(made["delta"])[-1]["ais_from"] == "prior"


def test_chains_that_would_not_fit_are_refused_before_they_start(runs, capsys, monkeypatch):
    idx, made = runs
    monkeypatch.setattr("pyrovae.inference.ais.available_bytes", lambda device: 1000)
    before = _entries(made["normal"]) if (made["normal"] / EVALUATION).exists() else []
    assert _evaluate(idx, made["normal"], "--method", "ais", *AIS) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "more than the 1.0 kB free on cpu" in err
    assert "fewer --chains" in err
    after = _entries(made["normal"]) if (made["normal"] / EVALUATION).exists() else []
    assert after == before


@pytest.mark.parametrize("flag", ["--ais-steps", "--chains", "--leapfrog"])
def test_a_zero_count_is_refused_when_parsed(runs, capsys, flag):
    idx, made = runs
    assert _evaluate(idx, made["normal"], "--method", "ais", flag, "0") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag in err
