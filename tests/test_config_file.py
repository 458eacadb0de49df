"""``pyrovae train --config FILE``: JSON or TOML settings, a run's own config.json, flags on top,
one-line errors for what does not fit."""

from __future__ import annotations

import json

import pytest

from pyrovae import TrainConfig
from pyrovae.cli import main
from pyrovae.core.errors import PyroVAEError
from pyrovae.runs.config_file import read_config_file
from pyrovae.runs.folder import CONFIG, read_config

COMMON = ["--no-progress", "--no-download", "--no-figures"]


def _train(idx_dir, run, *args: str) -> int:
    return main(["train", *args, "--data-dir", str(idx_dir), "--run-dir", str(run), *COMMON])


def test_json_and_toml_give_the_same_settings(tmp_path):
    (tmp_path / "c.json").write_text(
        json.dumps({"hidden": [32, 16], "lr": 1, "estimator": "iwae", "train_subset": None})
    )
    (tmp_path / "c.toml").write_text('hidden = [32, 16]\nlr = 1\nestimator = "iwae"\n')
    from_json = read_config_file(tmp_path / "c.json")
    from_toml = read_config_file(tmp_path / "c.toml")
    assert from_json == {"hidden": [32, 16], "lr": 1, "estimator": "iwae", "train_subset": None}
    assert from_toml == {"hidden": [32, 16], "lr": 1, "estimator": "iwae"}
    assert TrainConfig(**from_toml).hidden == (32, 16)


def test_flags_override_the_file_and_the_file_overrides_the_preset(tmp_path, idx_dir):
    settings = {"dataset": "mnist", "hidden": [8], "latent_dim": 3, "batch_size": 20}
    settings |= {"epochs": 2, "train_subset": 40, "device": "cpu", "lr": 0.01}
    (tmp_path / "c.toml").write_text(
        "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    )
    run = tmp_path / "run"
    assert _train(idx_dir, run, "--config", str(tmp_path / "c.toml"), "--epochs", "1") == 0
    config = read_config(run)
    assert config == TrainConfig(**{**settings, "epochs": 1})
    run = tmp_path / "preset"
    assert _train(idx_dir, run, "--preset", "burda2015", "--config", str(tmp_path / "c.toml")) == 0
    config = read_config(run)
    assert config.hidden == (8,) and config.lr == 0.01  # the file's, over the preset's
    assert config.activation == "tanh" and config.adam_eps == 1e-4  # the preset's


def test_a_runs_own_config_trains_it_again_with_changes(tmp_path, idx_dir):
    first = tmp_path / "first"
    args = ["--dataset", "mnist", "--hidden", "8", "--latent-dim", "2", "--train-subset", "40"]
    assert _train(idx_dir, first, *args, "--estimator", "iwae", "--num-particles", "3") == 0
    again = tmp_path / "again"
    assert _train(idx_dir, again, "--config", str(first / CONFIG), "--epochs", "2") == 0
    assert read_config(again) == read_config(first).replace(epochs=2)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("c.json", '{"hiden": [3]}', "unknown keys: hiden (did you mean 'hidden'?)"),
        ("c.json", '{"lr": "fast"}', "'lr' must be a number, got 'fast'"),
        ("c.toml", 'hidden = "400 400"', "'hidden' must be a list of integers, got '400 400'"),
        ("c.toml", "epochs = 2.5", "'epochs' must be an integer, got 2.5"),
        ("c.toml", "conditional = 1", "'conditional' must be true or false, got 1"),
        ("c.json", "[1, 2]", "a config must be an object of settings, got list"),
        ("c.json", '{"lr": 1e-3,}', "is not valid: "),
        ("c.toml", "hidden = [", "is not valid: "),
    ],
)
def test_bad_files_are_one_line_errors_and_write_nothing(tmp_path, name, text, message, capsys):
    (tmp_path / name).write_text(text)
    assert main(["train", "--config", str(tmp_path / name), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pyrovae: error: --config {tmp_path / name}") and message in err
    assert err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_a_missing_file_or_a_folder_is_named(tmp_path):
    with pytest.raises(PyroVAEError, match="no such file"):
        read_config_file(tmp_path / "missing.json")
    with pytest.raises(PyroVAEError, match="is a folder; give a file"):
        read_config_file(tmp_path)


def test_values_that_parse_but_do_not_make_a_config_are_refused(tmp_path, capsys):
    (tmp_path / "c.json").write_text('{"likelihood": "gaussian"}')  # Bernoulli pixels by default
    assert main(["train", "--config", str(tmp_path / "c.json")]) == 2
    assert "not a valid density for --pixels dynamic" in capsys.readouterr().err


def test_resume_refuses_a_config_file(tmp_path, capsys):
    (tmp_path / "c.json").write_text("{}")
    code = main(["train", "--resume", str(tmp_path), "--config", str(tmp_path / "c.json")])
    assert code == 2
    assert "--resume keeps the run's settings; drop --config" in capsys.readouterr().err
