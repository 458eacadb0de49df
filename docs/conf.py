"""Sphinx configuration of pyrovae's documentation site (built offline by ``make docs``)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE / "_ext"), str(HERE.parent)]

project = "pyrovae"
author = "the pyrovae developers"
copyright = "2026, the pyrovae developers"
release = version = "0.1.0"

extensions = [
    "myst_nb",  # Markdown pages (MyST) and the notebooks, with their committed outputs
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "sphinx-mathjax-offline",  # MathJax copied into the site: read offline (a hyphenated name)
    "pyrovae_docs",  # registries, the missing-docstring check, public names for private paths
]

root_doc = "index"
exclude_patterns = ["_build", "_ext", "_static", "figures/README.md", "**/.ipynb_checkpoints"]
html_theme = "furo"
html_title = "pyrovae"
html_static_path = ["_static"]
html_css_files = ["pyrovae.css"]

# Broken references are errors: with nitpicky, an unresolved cross-reference warns, and the
# build runs with -W. References into PyTorch, Pyro and the standard library cannot resolve
# offline (no intersphinx inventories), so those are the only ones let through.
nitpicky = True
_EXTERNAL_MODULES = (
    "torch|pyro|numpy|np|matplotlib|tqdm|collections|typing|types|pathlib|os|argparse|dataclasses"
    "|enum|abc|contextlib|io|json|concurrent|multiprocessing|threading|signal|subprocess"
)
_EXTERNAL_NAMES = (
    "Tensor|Path|Module|Figure|Distribution|ExpandedDistribution|Callable|Iterator|Iterable"
    "|Sequence|Mapping|MutableMapping|Any|Literal|TypeVar|T|NamedTuple|ModuleType|ELBO|Optimizer"
    "|Generator|ndarray|PathLike|TextIO|BinaryIO"
)
_BUILTINS = (
    "int|float|str|bool|bytes|dict|list|tuple|set|frozenset|object|None|type|callable|optional"
    "|default|iterable|sequence|mapping"
)
nitpick_ignore_regex = [
    ("py:.*", rf"({_EXTERNAL_MODULES})(\..*)?"),
    ("py:.*", rf"({_EXTERNAL_NAMES})"),
    ("py:class", rf"({_BUILTINS})"),
    # Sphinx splits this dataclass field's annotation (LoadedRun.history) at its comma
    ("py:class", r"list\[dict\[str"),
]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True}
autodoc_mock_imports: list[str] = []

myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # the notebooks' committed outputs are rendered, never re-run
suppress_warnings = ["myst.header"]
