"""``pyrovae train``: a new run from flags, a preset and a config file, or ``--resume`` of one;
data-parallel under ``torchrun``."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from pyrovae.cli.parser import _add_config_flags, _add_data_flags, _flag, _readable
from pyrovae.core.defaults import (
    DEFAULT_TIMEOUT,
    OTHER_DATA_FLAG,
    RESTART_FLAG,
    RESTARTED,
    TENSORBOARD,
)
from pyrovae.core.errors import PyroVAEError
from pyrovae.core.ranges import SEED
from pyrovae.runs.config import PRESETS, TrainConfig, preset_config
from pyrovae.runs.folder import FIGURES, read_config


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``train`` subcommand and its flags."""
    train = subparsers.add_parser("train", help="train a VAE (or --resume one)")
    _add_config_flags(train)
    _add_data_flags(train)
    train.add_argument(
        "--preset",
        metavar="NAME",
        help=f"start from a named protocol ({', '.join(PRESETS)}); other flags override it",
    )
    train.add_argument(
        "--config",
        metavar="FILE",
        help="settings from a JSON or TOML file of TrainConfig fields (the flags above, spelled "
        "latent_dim = 2), or a run's own config.json; flags override it, it overrides --preset",
    )
    train.add_argument("--run-dir", help="run folder (default: a new folder under runs/)")
    train.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR (or every seed of a --seeds group) up to --epochs in "
        "total. The run keeps the settings it recorded: of the setting flags above, --epochs "
        "(the total to reach) and --device may change; any other (--lr, --hidden, --estimator, "
        "…) is accepted only with the recorded value, a changed one is refused (naming the "
        "recorded and the given value); --run-dir, --preset, --config and --seeds are refused. "
        "How this process runs may change: --threads, --data-dir, --no-download, --no-progress, "
        "--no-figures, --tensorboard, --dist-timeout",
    )
    train.add_argument(
        RESTART_FLAG,
        action="store_true",
        help="with --resume: train the run again from epoch 0 with its recorded settings, after "
        f"moving its records (checkpoint, metrics, evaluations, figures, …) into "
        f"RUN_DIR/{RESTARTED}DATE-TIME/; nothing is deleted. Needed when the checkpoint is "
        "missing but the folder records trained epochs",
    )
    train.add_argument(
        "--seeds",
        type=SEED,
        nargs="+",
        metavar="SEED",
        help="train one run per seed side by side in one process (their steps batched into one "
        "graph), each in RUN_DIR/seed-SEED/, each the run its seed gives alone; evaluate RUN_DIR "
        "reports mean ± sd over seeds",
    )
    train.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (each epoch's line and the final figure still print)",
    )
    train.add_argument(
        "--no-figures",
        action="store_true",
        help=f"no figures in RUN_DIR/{FIGURES}/ and no latent snapshots (2-D latent) in latents.pt",
    )
    train.add_argument(
        "--tensorboard",
        action="store_true",
        help=f"also write each epoch's metrics and image grids as TensorBoard events in "
        f"RUN_DIR/{TENSORBOARD}/ (needs pip install 'pyrovae[tensorboard]')",
    )
    train.add_argument(
        "--dist-timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="under torchrun: how long a process waits for the others to join, and in any "
        f"exchange, before it stops with an error (default: {DEFAULT_TIMEOUT:g})",
    )


def _seconds(text: str) -> float:
    """``--dist-timeout``'s value, checked as it is parsed (inf or 1e300 overflowed torch)."""
    from pyrovae.core.distributed import check_timeout

    try:
        value = float(text)
        check_timeout(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    except PyroVAEError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--dist-timeout ")) from None
    return value


RESUMABLE = {"epochs", "device"}


def run(args: argparse.Namespace) -> None:
    """Train (or resume) the run; rank 0 prints its test figure and folder."""
    from pyrovae.core.distributed import agree, from_root, process_group_from_env, reported_by_root
    from pyrovae.inference.report import test_bits, test_figure
    from pyrovae.runs.config_file import read_config_file
    from pyrovae.runs.seeds import is_group, resume_seeds, train_seeds
    from pyrovae.runs.train import resume_run, train_run

    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if hasattr(args, f.name)
    }
    common = {
        "data_dir": args.data_dir,
        "download": not args.no_download,
        "progress": not args.no_progress,
        "epoch_lines": True,  # --no-progress drops the bar only
        "figures": not args.no_figures,
        "tensorboard": args.tensorboard,
    }
    known = args.resume or args.run_dir  # named in the line a lost peer ends the group with
    with process_group_from_env(args.dist_timeout, known) as rank:
        if args.resume is not None:
            if args.seeds is not None:
                raise reported_by_root(PyroVAEError("--resume keeps the run's seeds; drop --seeds"))
            settings = {n: v for n, v in given.items() if n not in RESUMABLE}
            fixed = from_root(lambda: changed_settings(args.resume, settings))  # rank 0 reads
            fixed += [
                _flag(n) for n in ("run_dir", "preset", "config") if getattr(args, n) is not None
            ]
            if fixed:
                error = PyroVAEError(f"--resume keeps the run's settings; drop {', '.join(fixed)}")
                raise reported_by_root(error)  # every rank has the same arguments
            epochs, device = given.get("epochs"), given.get("device")
            group = from_root(lambda: is_group(args.resume))  # rank 0 alone reads the folder
            resume = resume_seeds if group else resume_run
            path, history = resume(
                args.resume,
                epochs,
                device,
                **common,
                allow_other_data=args.allow_other_data,
                restart=args.restart,
            )
        elif args.allow_other_data or args.restart:
            flag = OTHER_DATA_FLAG if args.allow_other_data else RESTART_FLAG
            error = PyroVAEError(f"{flag} is for --resume RUN_DIR; a new run has no records yet")
            raise reported_by_root(error)
        else:
            preset = args.preset

            def resolved() -> TrainConfig:
                settings = {} if args.config is None else read_config_file(args.config)
                settings |= given
                if preset is None:
                    return TrainConfig(**settings)
                return preset_config(preset, **settings)

            config = agree(resolved)
            if args.seeds is not None:
                path, history = train_seeds(config, args.seeds, args.run_dir, **common)
            else:
                path, history = train_run(config, args.run_dir, **common)
    if rank == 0:
        if is_group(path):
            _print_group(path, history)
        else:
            config = read_config(path)
            name, key = test_figure(config.beta, config.kl_warmup)
            last = history[-1]
            bits = test_bits(last, key)  # 8-bit data: also in bits per dimension
            shown = "" if bits is None else f" ({bits:.4f} bits/dim)"
            print(f"test {name} {last[key]:.2f} nats per image{shown} after epoch {last['epoch']}")
            if "test_accuracy" in last:  # M2's classifier q(y|x)
                print(f"test accuracy {100 * last['test_accuracy']:.2f}% (q(y|x))")
        print(f"run folder: {path}")


def changed_settings(run_dir: str, settings: dict[str, Any]) -> list[str]:
    """Each of ``settings`` (flags given with ``--resume``) whose value differs from the one
    the run recorded (for a group, from any of its runs), as ``--lr (recorded 0.001, given
    0.1)``; a flag equal to the recorded value changes nothing and is accepted."""
    from pyrovae.runs.seeds import is_group, seed_runs

    if not settings:
        return []
    folder = Path(run_dir)
    recorded = [read_config(run) for run in (seed_runs(folder) if is_group(folder) else [folder])]
    changed = []
    for name, value in settings.items():
        given = [config.replace(**{name: value}) for config in recorded]
        if given != recorded:
            was = ", ".join(dict.fromkeys(_readable(getattr(c, name)) for c in recorded))
            now = _readable(getattr(given[0], name))
            changed.append(f"{_flag(name)} (recorded {was}, given {now})")
    return changed


def _print_group(path, histories) -> None:
    """Each seed's last test figure, then their mean ± standard deviation."""
    from pyrovae.inference.report import test_figure
    from pyrovae.inference.side_by_side import mean_and_std
    from pyrovae.runs.seeds import seed_runs

    runs = seed_runs(path)
    config = read_config(runs[0])
    name, key = test_figure(config.beta, config.kl_warmup)
    for run, history in zip(runs, histories, strict=True):
        print(f"{run.name}: test {name} {history[-1][key]:.2f} nats per image")
    mean, std = mean_and_std([h[-1][key] for h in histories])
    epoch = histories[0][-1]["epoch"]
    print(
        f"test {name} {mean:.2f} ± {std:.2f} nats per image after epoch {epoch} "
        f"(mean ± sd over {len(runs)} seeds)"
    )
