"""Data-parallel training on torch.distributed (gloo, CPU processes), exact against one process.

The multi-process checks start real processes as torchrun would (tests/distributed_harness.py,
one machine, localhost) or through torchrun itself; each has a timeout and kills what it
started, so a hang fails a test instead of the suite.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import FISHER_MODEL, write_dataset
from distributed_harness import (
    BATCH,
    EPOCHS,
    N_TRAIN,
    SEED,
    fit_case,
    free_ports,
    launch,
)
from test_compiled import accepts

from pyrovae import (
    ESTIMATORS,
    GUIDES,
    LIKELIHOODS,
    PRIORS,
    evaluate_elbo,
    fit,
    load_run,
    make_estimator,
)
from pyrovae.cli import main
from pyrovae.core import distributed
from pyrovae.core.errors import PyroVAEError
from pyrovae.core.runtime import get_rng_state, set_rng_state, set_seed
from pyrovae.inference.compiled import CompiledELBO
from pyrovae.inference.data_parallel import shard
from pyrovae.inference.kinds import CONTINUOUS, DISCRETE, estimator_kinds
from pyrovae.nets import NETS
from pyrovae.runs.checkpoint import load_checkpoint
from pyrovae.runs.folder import CHECKPOINT, CONFIG, FIGURES, METRICS, read_metrics

HARNESS = Path(__file__).resolve().parent / "distributed_harness.py"
TIMEOUT = 420  # seconds for a whole multi-process check on a loaded 2-core machine
WORLD = 2


# ---------------------------------------------------------------- pieces, in one process


def test_rank_streams_are_the_run_seed_for_rank_0_and_distinct_otherwise():
    assert distributed.rank_seed(7, 0) == 7
    seeds = {distributed.rank_seed(s, r) for s in range(20) for r in range(1, 9)}
    assert len(seeds) == 20 * 8  # every (seed, rank ≥ 1) has its own stream
    assert all(0 <= s < 2**32 for s in seeds)  # NumPy's seed range
    assert distributed.rank_seed(7, 1) == distributed.rank_seed(7, 1)  # reproducible


def test_shards_split_the_global_batch_in_order():
    x = torch.arange(11)
    parts = [shard((x,), r, 3)[0] for r in range(3)]
    assert [p.tolist() for p in parts] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    assert shard((x[:1],), 1, 2)[0].numel() == 0  # a short last batch leaves a rank empty


@contextmanager
def group_of_one():
    """A process group of one process (gloo, an in-memory store) for the block."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.fixture
def one_process_group():
    with group_of_one():
        yield


@pytest.mark.parametrize("name,k", [("elbo", 1), ("iwae-dreg", 3)])
def test_fit_in_a_group_of_one_equals_plain_fit(name, k):
    """Inside a group, fit goes through DDP and the sharded step; with one rank that is the
    plain step: the same weights bit for bit, the same metrics."""
    case = {"name": name, "estimator": name, "k": k, "compile": True}
    grouped, plain = fit_case(case), fit_case(case)
    with group_of_one():
        got = fit(grouped["model"], grouped["guide"], grouped["data"], name, **grouped["kwargs"])
    want = fit(plain["model"], plain["guide"], plain["data"], name, **plain["kwargs"])
    for part in ("model", "guide"):
        a, b = grouped[part].state_dict(), plain[part].state_dict()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    for r, s in zip(got, want, strict=True):
        assert r["train_elbo"] == pytest.approx(s["train_elbo"], rel=1e-6, abs=0)
        assert r["test_elbo"] == s["test_elbo"]


def test_more_processes_than_gpus_is_refused(one_process_group, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(PyroVAEError, match="2 processes on this machine but 1 CUDA GPU visible"):
        distributed.rank_device("cuda")
    with pytest.raises(PyroVAEError, match="LOCAL_RANK; use --device cuda"):
        distributed.rank_device("cuda:1")
    assert distributed.rank_device("cpu") == torch.device("cpu")


def test_other_commands_run_on_rank_0_alone(tmp_path, monkeypatch, capsys):
    """Under a launcher, evaluate/diagnose/sample/plot are rank 0's: another rank exits at
    once (its arguments would be an error if it ran)."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["evaluate", str(tmp_path / "missing")]) == 0
    assert capsys.readouterr() == ("", "")
    monkeypatch.setenv("RANK", "0")
    assert main(["evaluate", str(tmp_path / "missing")]) == 2


# ---------------------------------------------------------------- 2 processes against 1


class SimulatedRanks:
    """What W ranks compute, in one process: for each global batch, rank r's shard under rank
    r's own noise stream, the gradients accumulated (summed) in ``.grad``."""

    def __init__(self, estimator, world: int, seed: int) -> None:
        self.estimator, self.world, self.seed = estimator, world, seed
        self.streams: list | None = None

    def loss_and_grads(self, model, guide, *args):
        if self.streams is None:  # rank 0's stream is where fit's set_seed(seed) left it
            self.streams = [get_rng_state()]
            for r in range(1, self.world):
                set_seed(distributed.rank_seed(self.seed, r))
                self.streams.append(get_rng_state())
        total = 0.0
        for r in range(self.world):
            part = tuple(t.tensor_split(self.world)[r] for t in args)
            if part[0].shape[0] == 0:
                continue
            set_rng_state(self.streams[r])
            total += self.estimator.loss_and_grads(model, guide, *part)
            self.streams[r] = get_rng_state()
        set_rng_state(self.streams[0])
        return total


def _case(name, objective, k=1, compile=True, **config):
    return {"name": name, "estimator": objective, "k": k, "compile": compile, "config": config}


ESTIMATOR_CASES = [
    _case(f"{e}-K{k}-{'compiled' if compile else 'plain'}", e, k, compile)
    for e, k in (("elbo", 1), ("analytic-kl", 1), ("iwae", 5), ("iwae-dreg", 5))
    for compile in (True, False)
]


BINARY_CODE = {"guide": "bernoulli", "prior": "bernoulli"}


def _part_cases():
    """Every other entry of each registry, on the default model otherwise."""
    # nvil left out: its running average is each rank's own (not summed over ranks), so a
    # rank's φ-gradient is not the one a single process makes on the whole batch
    for e in sorted(set(ESTIMATORS) - {"elbo", "analytic-kl", "iwae", "iwae-dreg", "nvil"}):
        # an estimator for discrete codes only trains the 3-unit binary code (8 states)
        continuous = CONTINUOUS in estimator_kinds(ESTIMATORS[e])
        code = {} if continuous else dict(BINARY_CODE, estimator=e)
        if e == "fisher":  # scores x: a smooth likelihood on grey pixels
            code = FISHER_MODEL
        yield _case(e, e, 1 if accepts(e, 1) else 3, **code)
    for g in sorted(set(GUIDES) - {"normal"}):
        if GUIDES[g].latent_kind == DISCRETE:  # with its own prior and a score function
            loo = {"estimator": "score-function-loo", "num_particles": 3}
            yield _case(f"{g}-guide", "score-function-loo", 3, guide=g, prior=g, **loo)
        elif g == "delta":
            yield _case("autoencoder", "elbo", autoencoder=True)
        else:  # a closed-form KL where there is one
            yield _case(f"{g}-guide", "analytic-kl" if g == "full-covariance" else "elbo", guide=g)
    for p in sorted(set(PRIORS) - {"normal"}):  # vamp: a parameter shared by model and guide
        if getattr(PRIORS[p], "conditional", False):  # p(z|x_obs): with its condition
            yield _case(f"{p}-prior", "iwae", 3, prior=p, condition_on="quadrants:2")
        elif PRIORS[p].code == "continuous":  # a discrete code's prior: with its guide above
            yield _case(f"{p}-prior", "iwae", 3, prior=p)
    for name in sorted(set(LIKELIHOODS) - {"bernoulli"}):
        pixels = "grey" if "grey" in LIKELIHOODS[name].pixels else "8bit"
        yield _case(f"{name}-likelihood", "elbo", pixels=pixels, likelihood=name)
    for n in sorted(set(NETS) - {"mlp"}):
        yield _case(f"{n}-net", "elbo", net=n)
    yield _case("conditional", "elbo", conditional=True)
    for compile in (True, False):  # β changes every step for 4 steps, then stays
        yield _case(
            f"beta-warmup-{'compiled' if compile else 'plain'}",
            "elbo",
            compile=compile,
            beta=2.0,
            kl_warmup=4,
        )


PART_CASES = list(_part_cases())
CASES = ESTIMATOR_CASES + PART_CASES


@pytest.fixture(scope="module")
def two_process_fits(tmp_path_factory):
    """Every case trained by 2 processes (fit inside the group), once for the module."""
    out = tmp_path_factory.mktemp("fits")
    port, job_port = free_ports(2)
    spec = {"out": str(out), "jobs": [{"kind": "fit", "port": job_port, "cases": CASES}]}
    (out / "spec.json").write_text(json.dumps(spec))
    ranks = launch([str(HARNESS), str(out / "spec.json")], WORLD, port, TIMEOUT)
    for r, result in enumerate(ranks):
        assert result.returncode == 0, f"rank {r}: {result.stderr[-3000:]}"
    return out


def _reference(case):
    """One process summing both shards' gradients under the same per-rank noise."""
    parts = fit_case(case)
    inner = make_estimator(case["estimator"], case["k"])
    if case["compile"]:
        inner = CompiledELBO(inner)
    kwargs = {**parts["kwargs"], "compile": False}
    history = fit(
        parts["model"], parts["guide"], parts["data"], SimulatedRanks(inner, WORLD, SEED), **kwargs
    )
    return parts, history


def _max_diff(a, b) -> float:
    return (
        (torch.as_tensor(a, dtype=torch.float64) - torch.as_tensor(b, dtype=torch.float64))
        .abs()
        .max()
        .item()
    )


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_two_processes_equal_one_summing_both_shards(two_process_fits, case):
    """After 2 epochs (6 steps, the last of each epoch a 1-row batch that leaves rank 1
    without rows) the weights and Adam's state of both ranks are identical, and within 1e-6
    of one process that sums the two shards' gradients, each under its rank's noise stream."""
    ranks = [
        torch.load(two_process_fits / f"fit-{case['name']}-rank{r}.pt", weights_only=True)
        for r in range(WORLD)
    ]
    parts, history = _reference(case)
    assert N_TRAIN % BATCH < WORLD  # the short last batch is in the run
    for part in ("model", "guide"):
        want = parts[part].state_dict()
        assert ranks[0][part].keys() == want.keys()
        for key, value in want.items():
            assert torch.equal(ranks[0][part][key], ranks[1][part][key]), key
            assert _max_diff(ranks[0][part][key], value) <= 1e-6, key
    want = parts["optimizer"].state_dict()["state"]
    got = [r["optimizer"]["state"] for r in ranks]
    assert got[0].keys() == got[1].keys() == want.keys()
    for i, state in want.items():
        for name, value in state.items():  # step, exp_avg, exp_avg_sq
            assert torch.equal(torch.as_tensor(got[0][i][name]), torch.as_tensor(got[1][i][name]))
            assert _max_diff(got[0][i][name], value) <= 1e-6, (i, name)
            if name == "exp_avg":  # Adam's step is blind to the gradients' scale, its state not
                assert torch.as_tensor(value).abs().max() > 1e-3
    assert [r["epoch"] for r in ranks[0]["history"]] == list(range(1, EPOCHS + 1))
    for got_record, want_record in zip(ranks[0]["history"], history, strict=True):
        for key in ("train_elbo", "test_elbo", "test_kl"):
            assert got_record[key] == pytest.approx(want_record[key], rel=1e-6), key
    for a, b in zip(ranks[0]["history"], ranks[1]["history"], strict=True):
        assert {k: v for k, v in a.items() if k != "seconds"} == {
            k: v for k, v in b.items() if k != "seconds"
        }


# ---------------------------------------------------------------- the CLI with 2 processes

CLI_FLAGS = [
    *["--dataset", "mnist", "--hidden", "16", "--latent-dim", "2", "--batch-size", "50"],
    *["--train-subset", "300", "--device", "cpu", "--no-progress", "--no-download"],
    *["--no-figures", "--dist-timeout", "60"],
]

RESUME_FLAGS = ["--no-progress", "--no-download", "--dist-timeout", "60"]  # with figures


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """Two processes run ``pyrovae train`` jobs in turn (each on a port of its own): a straight
    2-epoch run, a 1-epoch run resumed to 2, a run whose rank 1 meets a NaN at its 8th step
    (epoch 2, step 2), and a batch smaller than the world. Rank 1 runs every job under a
    tripwire on the run folder. The resume draws figures and latent snapshots (2-D latent)."""
    root = tmp_path_factory.mktemp("cli")
    idx = root / "idx"
    write_dataset(idx)
    data = ["--data-dir", str(idx)]
    runs = {name: root / name for name in ("straight", "resumed", "nan", "tiny")}
    jobs = [
        ("straight", [*CLI_FLAGS, *data, "--epochs", "2", "--run-dir", str(runs["straight"])]),
        ("first", [*CLI_FLAGS, *data, "--epochs", "1", "--run-dir", str(runs["resumed"])]),
        ("resume", ["--resume", str(runs["resumed"]), "--epochs", "2", *data, *RESUME_FLAGS]),
        ("nan", [*CLI_FLAGS, *data, "--epochs", "2", "--run-dir", str(runs["nan"])]),
        ("tiny", [*CLI_FLAGS, *data, "--batch-size", "1", "--run-dir", str(runs["tiny"])]),
    ]
    port, *ports = free_ports(len(jobs) + 1)
    spec = {
        "out": str(root),
        "jobs": [
            {
                "kind": "cli",
                "port": p,
                "argv": ["train", *argv],
                "watch": str(runs["resumed" if name in ("first", "resume") else name]),
                "nan_at": 8 if name == "nan" else 0,
            }
            for p, (name, argv) in zip(ports, jobs, strict=True)
        ],
    }
    (root / "spec.json").write_text(json.dumps(spec))
    ranks = launch([str(HARNESS), str(root / "spec.json")], WORLD, port, TIMEOUT)
    for r, result in enumerate(ranks):
        assert result.returncode == 0, f"rank {r}: {result.stderr[-3000:]}"
    results = [json.loads((root / f"cli-rank{r}.json").read_text()) for r in range(WORLD)]
    by_job = {name: [results[r][i] for r in range(WORLD)] for i, (name, _) in enumerate(jobs)}
    return runs, by_job


def _timeless(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.mark.slow
def test_resumed_two_process_run_equals_the_straight_one(cli_runs):
    runs, jobs = cli_runs
    for name in ("straight", "first", "resume"):
        assert [j["code"] for j in jobs[name]] == [0, 0], jobs[name]
    a, b = load_checkpoint(runs["straight"]), load_checkpoint(runs["resumed"])
    assert a["epoch"] == b["epoch"] == 2 and a["world_size"] == b["world_size"] == WORLD
    for key in ("model", "guide"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), name
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    for i, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            other = b["optimizer"]["state"][i][name]
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(other))
    for r in range(WORLD):  # every rank's generators, saved by rank 0
        assert torch.equal(a["rank_rngs"][r]["torch"], b["rank_rngs"][r]["torch"])
        assert a["rank_rngs"][r]["python"] == b["rank_rngs"][r]["python"]
        assert torch.equal(a["rank_rngs"][r]["numpy"][1], b["rank_rngs"][r]["numpy"][1])
    assert not torch.equal(a["rank_rngs"][0]["torch"], a["rank_rngs"][1]["torch"])
    assert torch.equal(a["rng"]["torch"], a["rank_rngs"][0]["torch"])
    assert _timeless(read_metrics(runs["resumed"])) == _timeless(read_metrics(runs["straight"]))
    assert _timeless(b["history"]) == _timeless(a["history"])


@pytest.mark.slow
def test_only_rank_0_touches_the_run_folder_and_speaks(cli_runs):
    runs, jobs = cli_runs
    for name, job in jobs.items():
        assert job[1]["tripwire"] == [], (name, job[1]["tripwire"])
        assert job[1]["stdout"] == "", name  # results are rank 0's to print
    assert f"run folder: {runs['straight']}" in jobs["straight"][0]["stdout"]
    files = sorted(p.name for p in runs["straight"].iterdir())
    assert files == sorted([".lock", CONFIG, METRICS, CHECKPOINT])
    assert json.loads((runs["straight"] / CONFIG).read_text())["world_size"] == WORLD


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_both_with_exit_2(cli_runs):
    runs, jobs = cli_runs
    ranks = jobs["nan"]
    assert [j["code"] for j in ranks] == [2, 2]
    err = ranks[0]["stderr"]
    assert err.startswith("pyrovae: error: ") and err.count("\n") == 1, err
    assert "epoch 2, step 2" in err and "on rank 1" in err and "nan" in err
    assert "error" not in ranks[1]["stderr"]  # rank 0 reports it (rank 1: Pyro's NaN warnings)
    assert max(j["seconds"] for j in ranks) < 120  # stopped, not timed out (60 s)
    state = load_checkpoint(runs["nan"])  # the last good checkpoint, its checksum intact
    assert state["epoch"] == 1 and [r["epoch"] for r in read_metrics(runs["nan"])] == [1]
    assert not list(runs["nan"].glob(".*.tmp"))


@pytest.mark.slow
def test_a_batch_smaller_than_the_world_is_one_line(cli_runs):
    runs, jobs = cli_runs
    assert [j["code"] for j in jobs["tiny"]] == [2, 2]
    err = jobs["tiny"][0]["stderr"]
    assert err.count("\n") == 1 and "--batch-size 1 is smaller than the 2 processes" in err
    assert jobs["tiny"][1]["stderr"] == ""
    assert not runs["tiny"].exists()


@pytest.mark.slow
def test_resume_with_another_world_size_is_refused(cli_runs, tmp_path, capsys):
    runs, _ = cli_runs
    before = {p.name: p.read_bytes() for p in runs["straight"].iterdir() if p.is_file()}
    assert main(["train", "--resume", str(runs["straight"]), "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trained by 2 processes and this resume has 1" in err
    assert "with torchrun, 2 processes in all" in err
    after = {p.name: p.read_bytes() for p in runs["straight"].iterdir() if p.is_file()}
    assert after == before


# ---------------------------------------------------------------- torchrun, rendezvous


@pytest.mark.slow
def test_the_cli_through_torchrun(tmp_path):
    idx = tmp_path / "idx"
    write_dataset(idx, n_train=512)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(HARNESS.parent.parent), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [
            *[sys.executable, "-m", "torch.distributed.run", "--standalone"],
            *["--nproc_per_node=2", "-m", "pyrovae", "train", "--train-subset", "512"],
            *["--epochs", "1", "--run-dir", str(run), "--dataset", "mnist"],
            *["--data-dir", str(idx), "--hidden", "16", "--latent-dim", "3", "--device", "cpu"],
            *["--no-download", "--no-progress", "--dist-timeout", "60"],
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("run folder:") == 1  # rank 0 alone prints
    top = sorted(p.name for p in run.iterdir())
    assert top == sorted([".lock", CONFIG, METRICS, CHECKPOINT, FIGURES])
    assert {p.suffix for p in (run / FIGURES).iterdir()} == {".png"}
    state = load_checkpoint(run)
    assert state["world_size"] == 2 and len(state["rank_rngs"]) == 2
    assert [r["epoch"] for r in read_metrics(run)] == [1]
    assert math.isfinite(read_metrics(run)[0]["test_elbo"])


@pytest.mark.slow
def test_a_failed_rendezvous_times_out_with_one_line(tmp_path):
    """Rank 0 of 2 whose peer never comes, and rank 1 of 2 with no rank 0 to reach: each stops
    after --dist-timeout with one line and exit 2, writing nothing."""
    port, other = free_ports(2)
    argv = ["-m", "pyrovae", "train", "--dist-timeout", "3", "--run-dir", str(tmp_path / "r")]
    with ThreadPoolExecutor(2) as pool:  # two groups of their own: they wait out the time at once
        started = [
            pool.submit(launch, argv, WORLD, p, 180, ranks=[r]) for p, r in ((port, 0), (other, 1))
        ]
        alone, orphan = (s.result() for s in started)
    for result in (*alone, *orphan):
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.startswith("pyrovae: error: rank ") and result.stderr.count("\n") == 1
        assert "could not join the process group" in result.stderr and "within 3 s" in result.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_the_test_elbo_is_the_one_process_figure(cli_runs, tmp_path):
    """Rank 0 evaluates the test ELBO with the weights every rank holds: the same number as one
    process evaluating the checkpoint; and the other verbs read a 2-process run as any run."""
    runs, _ = cli_runs
    run = load_run(runs["resumed"], data_dir=str(runs["resumed"].parent / "idx"), download=False)
    test = evaluate_elbo(run.model, run.guide, run.data.test_x)
    assert read_metrics(runs["resumed"])[-1]["test_elbo"] == test["elbo"]
    assert {p.name for p in (runs["resumed"] / FIGURES).iterdir()} >= {"latent.png"}
    argv = ["evaluate", str(runs["resumed"]), "--num-samples", "10", "--no-progress"]
    assert main([*argv, "--data-dir", str(runs["resumed"].parent / "idx"), "--no-download"]) == 0
