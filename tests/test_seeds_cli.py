"""``pyrovae train --seeds``: a group folder of complete runs, each the run its seed gives
alone; resumed side by side (a replica a kill left behind catches up alone first); evaluate on a
group reports each seed and mean ± sd; refusals in one line."""

from __future__ import annotations

import json
import shutil

import pytest
from test_cli import _train

from pyrovae.cli import main
from pyrovae.runs.folder import CHECKPOINT, CONFIG, EVALUATION, METRICS, read_config, read_metrics
from pyrovae.runs.seeds import SEEDS_FILE, is_group, read_seeds, seed_runs


def _values(run):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(run)]


def _close(a, b, rel=1e-5):
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for x, y in zip(a, b, strict=True):
        for key in ("train_elbo", "test_elbo", "test_recon", "test_kl"):
            assert y[key] == pytest.approx(x[key], rel=rel), key


def test_each_seed_of_a_group_is_the_run_of_that_seed_alone(tmp_path, idx_dir, capsys):
    code, group = _train(tmp_path, idx_dir, "--epochs", "2", "--seeds", "3", "5", name="g")
    assert code == 0
    assert is_group(group) and read_seeds(group) == [3, 5]
    assert json.loads((group / SEEDS_FILE).read_text())["seeds"] == [3, 5]
    out = capsys.readouterr().out
    assert "seed-3: test ELBO" in out and "(mean ± sd over 2 seeds)" in out
    for run in seed_runs(group):
        assert {p.name for p in run.iterdir()} >= {CONFIG, CHECKPOINT, METRICS}
        seed = int(run.name.removeprefix("seed-"))
        assert read_config(run).seed == seed
        code, alone = _train(tmp_path, idx_dir, "--epochs", "2", "--seed", str(seed),
                             name=f"alone-{seed}")
        assert code == 0
        _close(read_metrics(alone), read_metrics(run))


def test_a_group_resumed_is_the_group_straight_through(tmp_path, idx_dir, capsys):
    """Bitwise; and when a kill fell between the replicas' checkpoints of an epoch (seed-5 is
    put back to its files of epoch 1), that replica catches up alone, equal to 1e-5 (its lone
    graph sums in another order than the batched one), and the group goes on."""
    code, straight = _train(tmp_path, idx_dir, "--epochs", "3", "--seeds", "3", "5", name="s")
    assert code == 0
    code, group = _train(tmp_path, idx_dir, "--epochs", "1", "--seeds", "3", "5", name="g")
    assert code == 0
    behind = tmp_path / "behind"
    shutil.copytree(group / "seed-5", behind)
    argv = ["train", "--resume", str(group), "--data-dir", str(idx_dir), "--no-progress",
            "--no-figures", "--no-download"]
    assert main([*argv, "--epochs", "2"]) == 0
    for name in (CHECKPOINT, METRICS):
        shutil.copy(behind / name, group / "seed-5" / name)
    assert main([*argv, "--epochs", "3"]) == 0
    runs, refs = seed_runs(group), seed_runs(straight)
    assert _values(runs[0]) == _values(refs[0])  # the batched graph replays the same kernels
    # seed-5's epoch 2 ran alone (the lone graph: another summation order), then batched
    _close(read_metrics(refs[1]), read_metrics(runs[1]))


def test_evaluate_on_a_group_prints_mean_and_sd(tmp_path, idx_dir, capsys):
    code, group = _train(tmp_path, idx_dir, "--epochs", "1", "--seeds", "0", "1", "2", name="g")
    assert code == 0
    capsys.readouterr()
    argv = ["evaluate", str(group), "--num-samples", "10", "--test-subset", "50",
            "--data-dir", str(idx_dir), "--no-progress", "--no-download"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    elbos = [float(line.split()[2]) for line in out.splitlines() if "test ELBO   " in line]
    assert len(elbos) == 4  # three seeds, then the mean
    mean_line = out.split("mean ± sd over 3 seeds")[1]
    mean = float(mean_line.split("test ELBO")[1].split("±")[0])
    assert mean == pytest.approx(sum(elbos[:3]) / 3, abs=2e-3)
    for run in seed_runs(group):
        assert (run / EVALUATION).is_file()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--seeds", "4"], "--seeds needs at least two seeds"),
        (["--seeds", "4", "4"], "--seeds must be distinct"),
    ],
)
def test_bad_seeds_are_one_line_and_write_nothing(tmp_path, idx_dir, capsys, extra, message):
    code, group = _train(tmp_path, idx_dir, "--epochs", "1", *extra, name="g")
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not group.exists()


def test_resume_of_a_group_refuses_seeds(tmp_path, idx_dir, capsys):
    code, group = _train(tmp_path, idx_dir, "--epochs", "1", "--seeds", "0", "1", name="g")
    assert code == 0
    capsys.readouterr()
    argv = ["train", "--resume", str(group), "--seeds", "0", "1", "--data-dir", str(idx_dir)]
    assert main(argv) == 2
    assert "--resume keeps the run's seeds" in capsys.readouterr().err


def test_a_damaged_seeds_file_is_one_line(tmp_path, idx_dir, capsys):
    code, group = _train(tmp_path, idx_dir, "--epochs", "1", "--seeds", "0", "1", name="g")
    assert code == 0
    (group / SEEDS_FILE).write_text("{not json")
    capsys.readouterr()
    argv = ["train", "--resume", str(group), "--epochs", "2", "--data-dir", str(idx_dir)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "seeds.json is damaged" in err and err.count("\n") == 1


def test_plot_on_a_group_draws_each_seed_and_the_band(tmp_path, idx_dir, capsys):
    code, group = _train(tmp_path, idx_dir, "--epochs", "2", "--seeds", "0", "1", name="g")
    assert code == 0
    argv = ["plot", str(group), "--data-dir", str(idx_dir), "--no-download"]
    assert main(argv) == 0
    assert (group / "figures" / "training_mean_sd.png").is_file()
    assert (group / "figures" / "training_curves.png").is_file()


def test_the_band_is_the_mean_and_sd_over_seeds():
    from pyrovae import plots

    def records(values):
        return [{"epoch": e + 1, "test_elbo": v, "test_recon": v, "test_kl": 1.0}
                for e, v in enumerate(values)]

    fig = plots.seed_band({"a": records([-10.0, -8.0]), "b": records([-12.0, -6.0, -1.0])})
    mean = [line for line in fig.axes[0].lines if line.get_label().startswith("mean")][0]
    assert list(mean.get_xdata()) == [1, 2]  # epoch 3 only one seed has reached
    assert list(mean.get_ydata()) == [-11.0, -7.0]
    band = fig.axes[0].collections[0].get_paths()[0].vertices[:, 1]
    sd = 2**0.5  # sample sd of (−10, −12) and of (−8, −6)
    assert min(band) == pytest.approx(-11.0 - sd) and max(band) == pytest.approx(-7.0 + sd)
    with pytest.raises(Exception, match="at least two seeds"):
        plots.seed_band({"a": records([1.0])})
