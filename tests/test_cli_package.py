"""``pyrovae/cli/`` stays a package of small modules: one module per verb, registered in
:data:`~pyrovae.cli.VERBS`, and no module over :data:`MAX_LINES` lines."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from pyrovae.cli import VERBS, build_parser

CLI = Path(__file__).resolve().parent.parent / "pyrovae" / "cli"
MAX_LINES = 400


def parser_verbs(parser: argparse.ArgumentParser) -> list[str]:
    """The subcommands ``parser`` offers, in its order."""
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


def verbs_without_module(parser: argparse.ArgumentParser, package: Path = CLI) -> list[str]:
    """The parser's verbs that have no module of their own, ``package/VERB.py``, registered in
    :data:`VERBS` as that module."""
    missing = []
    for verb in parser_verbs(parser):
        module = VERBS.get(verb)
        own = (package / f"{verb}.py").is_file() and module is not None
        if not own or module.__name__ != f"pyrovae.cli.{verb}":
            missing.append(verb)
    return missing


def test_no_cli_module_is_over_the_line_limit():
    lengths = {p.name: len(p.read_text().splitlines()) for p in sorted(CLI.glob("*.py"))}
    assert "__init__.py" in lengths and len(lengths) > len(VERBS)
    long = {name: n for name, n in lengths.items() if n > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: {long}"


def test_every_verb_has_its_own_module():
    verbs = parser_verbs(build_parser())
    assert verbs == list(VERBS)
    assert verbs_without_module(build_parser()) == []
    for verb in verbs:
        module = importlib.import_module(f"pyrovae.cli.{verb}")
        assert VERBS[verb] is module
        assert callable(module.add_parser) and callable(module.run)


def test_a_verb_without_a_module_is_caught():
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub.add_parser("export", help="a verb added to the parser alone")
    assert verbs_without_module(parser) == ["export"]
