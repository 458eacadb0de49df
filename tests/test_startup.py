"""Startup: ``pyrovae --help``, each verb's ``--help`` and a bad argument load none of torch,
Pyro, torchvision, matplotlib (the parser reads torch-free copies of the registries and defaults,
equal to the live ones); the package's public names resolve on first use; ``--threads``."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import pyrovae
import pyrovae.runs
from pyrovae.cli import main
from pyrovae.cli.command import VERBS
from pyrovae.cli.parser import NAMED_KINDS
from pyrovae.core import choices, defaults, threads
from pyrovae.core.errors import PyroVAEError
from pyrovae.core.registry import describe
from pyrovae.runs.config import TrainConfig
from pyrovae.runs.folder import CONFIG, METRICS

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "pyro", "torchvision", "matplotlib")

# What the parser answers at once: (arguments, exit status). One per kind of argument error.
QUICK = [
    ([], 2),  # no verb
    (["--help"], 0),
    *[([verb, "--help"], 0) for verb in VERBS],
    (["train", "--bogus"], 2),  # unknown flag
    (["train", "--guide", "nope"], 2),  # unknown registry name
    (["train", "--estimator", "miwea:3"], 2),
    (["evaluate", "RUN", "--method", "nope"], 2),  # bad argparse choice
    (["train", "--epochs", "0"], 2),  # out of its declared range
    (["diagnose", "RUN", "--estimators", "elbo", "--num-particles", "0"], 2),
    (["train", "--threads", "0"], 2),
    (["sample", "RUN", "--num", "x"], 2),  # not a number
]


def _python(code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args, "-c", textwrap.dedent(code)] if code else [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        timeout=120,
    )


def test_help_and_argument_errors_load_no_torch():
    """In a fresh process: import the package, build the parser, run every QUICK command
    (each its exit status, errors one line); then none of HEAVY was imported."""
    result = _python(
        f"""
        import contextlib, io, json, sys
        import pyrovae
        from pyrovae.cli import build_parser, main
        build_parser()
        codes, lines = [], []
        for argv, _ in {QUICK!r}:
            err = io.StringIO()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                try:
                    codes.append(main(argv))
                except SystemExit as e:
                    codes.append(e.code)
            lines.append(err.getvalue().count("\\n"))
        loaded = [m for m in {HEAVY!r} if m in sys.modules]
        print(json.dumps({{"codes": codes, "lines": lines, "loaded": loaded}}))
        """
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["codes"] == [code for _, code in QUICK]
    assert all(n == (1 if code else 0) for n, (_, code) in zip(out["lines"], QUICK, strict=True))
    assert out["loaded"] == []


@pytest.mark.parametrize("argv", [["--help"], ["train", "--bogus"]], ids=" ".join)
def test_the_command_itself_loads_no_torch(argv):
    """``python -m pyrovae`` (the console script's path: pyrovae/__main__.py), traced by
    ``-X importtime``: no HEAVY module in its imports."""
    result = _python("", "-X", "importtime", "-m", "pyrovae", *argv)
    assert result.returncode == (0 if argv == ["--help"] else 2)
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "pyrovae.cli.command" in imported  # the trace is read right
    assert not {m for m in imported if m.split(".")[0] in HEAVY}


def test_a_verb_that_runs_loads_torch_and_modules_are_attributes():
    """In a fresh process (one start of torch for both checks): ``import pyrovae`` loads no
    torch; a verb that runs does (so the checks above can fail; here sample on no run); and
    every module is still an attribute (``pyrovae.inference.make_optimizer``), loaded then,
    ``pyrovae.__main__`` not among them."""
    result = _python(
        """
        import sys
        import pyrovae
        from pyrovae.cli import main
        print("torch" in sys.modules, main(["sample", "no-such-run", "--threads", "1"]))
        print("torch" in sys.modules, pyrovae.inference.make_optimizer.__name__)
        print(pyrovae.runs.evaluate.__name__, "__main__" in dir(pyrovae))
        print(set(pyrovae.__all__) <= set(dir(pyrovae)))
        """
    )
    assert result.stdout.split() == [
        *("False", "2", "True", "make_optimizer", "pyrovae.runs.evaluate", "False", "True")
    ], result.stderr


@pytest.mark.parametrize("package", [pyrovae, pyrovae.runs], ids=lambda p: p.__name__)
def test_every_public_name_resolves(package):
    for name in package.__all__:
        assert getattr(package, name) is not None, name
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match="no_such_name"):
        package.no_such_name  # noqa: B018


def test_public_names_are_the_objects_of_their_modules():
    from pyrovae import TrainConfig as FromPackage
    from pyrovae.inference.estimators import ESTIMATORS

    assert FromPackage is TrainConfig and pyrovae.ESTIMATORS is ESTIMATORS
    assert pyrovae.runs.train_run is importlib.import_module("pyrovae.runs.train").train_run


def _live(module: str, expression: str):
    return eval(expression, vars(importlib.import_module(module)))  # a name, LOCAL, a call


@pytest.mark.parametrize("copy", choices.LIVE, ids=str)
def test_registry_copies_equal_the_live_registries(copy):
    """The same names in the same order, each with its live entry's description: a new entry
    (or a changed description) without its line in pyrovae/core/choices.py fails here."""
    live = _live(*choices.LIVE[copy])
    mirror = getattr(choices, copy)
    if isinstance(mirror, dict):
        assert mirror == {name: describe(entry) for name, entry in live.items()}
        assert list(mirror) == list(live)
    else:
        assert list(mirror) == list(live)


def test_the_config_lists_only_the_copies():
    """Every registry flag of TrainConfig reads one of the checked copies (none the live one)."""
    copies = [getattr(choices, name) for name in choices.LIVE]
    for f in dataclasses.fields(TrainConfig):
        registry = f.metadata["choices"]
        assert registry is None or any(registry is c for c in copies), f.name


@pytest.mark.parametrize("copy", defaults.LIVE, ids=str)
def test_default_copies_equal_the_originals(copy):
    mirror, live = getattr(defaults, copy), _live(*defaults.LIVE[copy])
    if isinstance(mirror, defaults.LocalSearch):
        assert mirror == tuple(getattr(live, field) for field in mirror._fields)
    else:
        assert mirror == live


@pytest.mark.parametrize("field", NAMED_KINDS, ids=str)
def test_the_parser_refuses_a_name_in_the_configs_words(field, capsys):
    with pytest.raises(PyroVAEError) as error:
        TrainConfig(**{field: "nope"})
    capsys.readouterr()
    assert main(["train", "--" + field.replace("_", "-"), "nope"]) == 2
    assert capsys.readouterr().err == f"pyrovae: error: {error.value}\n"


def test_activation_descriptions_are_ours():
    from pyrovae.nets.dense import ACTIVATIONS

    assert describe(ACTIVATIONS["relu"]) == "max(0, x): the rectified linear unit"
    assert isinstance(ACTIVATIONS["elu"](), torch.nn.ELU)


def test_upper_hidden_help_says_what_the_default_means(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: the --hidden sizes)" in text and "(default: )" not in text


def test_resume_help_names_what_may_change(capsys):
    """The flags --resume lets change (RESUMABLE) are the ones its help names, and --threads."""
    from pyrovae.cli.train import RESUMABLE

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    section = text[text.index("--resume RUN_DIR continue") :]
    clause = section[section.index("of the setting flags") : section.index("may change;")]
    named = {part.strip("(, ").split(" ")[0] for part in clause.split("--")[1:]}
    assert named == {name.replace("_", "-") for name in RESUMABLE}
    assert "--threads" in section[: section.index("--restart")]


# --threads


@pytest.fixture
def torch_threads():
    """Restore torch's thread count after the test (main sets it for the process)."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    "text,message",
    [("0", "must be in [1, 1024], got 0"), ("x", "'x' is neither"), ("1025", "got 1025")],
)
def test_bad_threads_are_one_line(text, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "RUN", "--threads", text])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and message in err


def test_auto_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    for load, count in ((0.0, 4), (1.2, 3), (1.6, 2), (3.9, 1), (12.0, 1)):
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, 0.0, 0.0))
        assert threads.resolve_threads("auto") == count, load
    assert threads.resolve_threads(2) == 2  # a number is taken as it is
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # an explicit choice wins over auto
    assert threads.resolve_threads("auto") == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2,1")  # nested levels: the outermost
    assert threads.resolve_threads("auto") == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    with pytest.raises(PyroVAEError, match=r"\$OMP_NUM_THREADS must be a whole number"):
        threads.resolve_threads("auto")


SMALL = ["--dataset", "mnist", "--hidden", "16", "--latent-dim", "2", "--batch-size", "50"]
SMALL += ["--train-subset", "100", "--device", "cpu", "--no-progress", "--no-download"]
SMALL += ["--no-figures"]


def _train(idx_dir, run, *extra):
    return main(["train", *SMALL, "--data-dir", str(idx_dir), *extra])


def test_threads_are_set_not_recorded_and_change_no_result(
    tmp_path, idx_dir, monkeypatch, capsys, torch_threads
):
    """--threads 1 and 2 train the same run (the same metrics to the last bit) with torch's
    thread count set to each when training starts; the count is not in config.json, and a
    --resume with another count goes on."""
    import pyrovae.runs.train as runs_train

    seen = []
    for name in ("train_run", "resume_run"):
        work = getattr(runs_train, name)

        def record(*args, work=work, **kwargs):
            seen.append(torch.get_num_threads())
            return work(*args, **kwargs)

        monkeypatch.setattr(runs_train, name, record)
    one, two = tmp_path / "one", tmp_path / "two"
    assert _train(idx_dir, one, "--run-dir", str(one), "--epochs", "1", "--threads", "1") == 0
    assert _train(idx_dir, two, "--run-dir", str(two), "--epochs", "1", "--threads", "2") == 0
    data = ["--data-dir", str(idx_dir), "--no-download", "--no-progress", "--no-figures"]
    assert main(["train", "--resume", str(one), *data, "--epochs", "2", "--threads", "2"]) == 0
    assert seen == [1, 2, 2]

    def metrics(run):  # every figure but the clock's
        records = [json.loads(line) for line in (run / METRICS).read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "seconds"} for r in records]

    assert metrics(one)[0] == metrics(two)[0] and len(metrics(one)) == 2
    recorded = json.loads((one / CONFIG).read_text())  # (its paths name the test: "threads")
    assert not [
        k for part in recorded.values() if isinstance(part, dict) for k in part if "thread" in k
    ]
    assert "threads" not in recorded
    capsys.readouterr()
