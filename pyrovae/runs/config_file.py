"""``pyrovae train --config FILE``: :class:`TrainConfig` settings from a JSON or TOML file.

The file holds field names and plain values (``hidden = [400, 400]``), any subset of them; a run
folder's own ``config.json`` is such a file too (its ``config`` entry is read), so a run can be
trained again with changes: ``pyrovae train --config runs/X/config.json --epochs 50``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pyrovae.core.errors import PyroVAEError, first_line
from pyrovae.core.files import read_at_most
from pyrovae.runs.config import TrainConfig
from pyrovae.runs.folder import RUN_FORMAT, SETTINGS_MAX_BYTES


def _parse_toml(text: str) -> Any:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        raise PyroVAEError("reading TOML needs Python ≥ 3.11 (tomllib); use a JSON file") from None
    return tomllib.loads(text)


def _parse_json(text: str) -> Any:
    return json.loads(text)


PARSERS = {".toml": _parse_toml}  # by suffix; anything else is read as JSON
MAX_BYTES = SETTINGS_MAX_BYTES  # --config /dev/zero is one line


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The settings in ``path``, checked: a missing, unparsable or too large (over
    :data:`MAX_BYTES`) file, unknown keys and values of the wrong type or range are one-line
    errors naming the file (see :meth:`TrainConfig.check_settings`)."""
    path = Path(path)
    if path.is_dir():
        raise PyroVAEError(f"--config {path} is a folder; give a file (a run's {path}/config.json)")
    parse = PARSERS.get(path.suffix.lower(), _parse_json)
    try:
        raw = read_at_most(path, MAX_BYTES)
        if raw is None:
            raise PyroVAEError(
                f"--config {path} is larger than {MAX_BYTES // 1024} KiB, the most read from a "
                "settings file; give a JSON or TOML file of settings"
            )
        data = parse(raw.decode())
    except FileNotFoundError:
        raise PyroVAEError(f"--config {path}: no such file") from None
    except OSError as e:
        raise PyroVAEError(f"--config {path}: cannot read it ({first_line(e)})") from None
    except ValueError as e:  # json.JSONDecodeError and tomllib.TOMLDecodeError
        raise PyroVAEError(f"--config {path} is not valid: {first_line(e)}") from None
    if isinstance(data, dict) and data.get("format") == RUN_FORMAT:
        data = data.get("config")  # a run folder's config.json
    try:
        return TrainConfig.check_settings(data)
    except PyroVAEError as e:
        raise PyroVAEError(f"--config {path}: {e}") from None
