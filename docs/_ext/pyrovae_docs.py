"""Sphinx extension for pyrovae's site.

- Public data (registries and constants) carry an attribute docstring where they are defined;
  a subpackage that re-exports one is documented with that text. A public name with no
  docstring anywhere is a warning, so ``make docs`` (``-W``) fails on it.
- A registry's documentation lists its entries, each linked to its class or function, and the
  ``registry-entries`` directive documents those entries where they are defined.
- Signatures name classes by the module that defines them (``pyrovae.runs.config.TrainConfig``);
  such a reference resolves to the object's public page (``pyrovae.runs.TrainConfig``). What
  resolves nowhere stays a warning.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging
from sphinx.util.docstrings import prepare_docstring
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

logger = logging.getLogger(__name__)

PUBLIC = [
    "pyrovae",
    "pyrovae.data",
    "pyrovae.guides",
    "pyrovae.inference",
    "pyrovae.models",
    "pyrovae.nets",
    "pyrovae.plots",
    "pyrovae.runs",
    "pyrovae.cli",
]

# The registries whose entries are documented one by one (one dict per swappable kind).
REGISTRIES = [
    "pyrovae.inference.ESTIMATORS",
    "pyrovae.models.LIKELIHOODS",
    "pyrovae.models.PRIORS",
    "pyrovae.guides.GUIDES",
    "pyrovae.nets.NETS",
    "pyrovae.data.PIXEL_MODES",
    "pyrovae.data.INPUT_KINDS",
]


def _resolve(path: str) -> Any:
    """The object a dotted path names: a module, or attributes of one (``pkg.mod.Class.meth``)."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


def _defined_doc(name: str, obj: Any) -> list[str]:
    """The attribute docstring of ``name`` in the pyrovae module that assigns it."""
    for modname, module in sorted(sys.modules.items()):
        if not modname.startswith("pyrovae") or vars(module).get(name) is not obj:
            continue
        try:
            docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
        except Exception:  # a module without source (none in pyrovae, but be safe)
            continue
        if ("", name) in docs:
            return list(docs[("", name)])
    return []


def _entry_target(entry: Any) -> Any:
    """What documents a registry entry: its class or function (a NamedTuple of classes, such as
    a net kind, by its first field)."""
    if isinstance(entry, tuple) and entry and inspect.isclass(entry[0]):
        return entry[0]
    if inspect.isclass(entry) or inspect.isfunction(entry):
        return entry
    return type(entry)


def _owned(obj: Any) -> bool:
    return getattr(obj, "__module__", "").startswith("pyrovae")


def _registry_table(registry: dict[str, Any]) -> list[str]:
    from pyrovae.core.registry import describe

    rows = ["", ".. list-table::", "   :header-rows: 1", "", "   * - name", "     - entry"]
    rows.append("     - what it is")
    for name, entry in registry.items():
        target = _entry_target(entry)
        link = (
            f":py:obj:`~{target.__module__}.{target.__qualname__}`"
            if _owned(target)
            else f"``{target.__module__}.{target.__qualname__}``"
        )
        rows += [f"   * - ``{name}``", f"     - {link}", f"     - {describe(entry) or ' '}"]
    return [*rows, ""]


def process_docstring(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list):
    type_doc = getattr(type(obj), "__doc__", None)
    type_doc = prepare_docstring(type_doc) if isinstance(type_doc, str) else []
    if what == "data" and [line for line in lines if line] == [line for line in type_doc if line]:
        lines.clear()  # autodoc's fallback: the docstring of the value's type (dict's, int's)
    if what == "data" and name.startswith("pyrovae") and not lines:
        lines.extend(_defined_doc(name.rpartition(".")[2], obj))
    if what == "data" and name in REGISTRIES:
        lines.extend(_registry_table(obj))
    if what in ("class", "function", "exception", "data", "module") and not any(
        line.strip() for line in lines
    ):
        logger.warning(f"pyrovae docs: {name} has no docstring", type="pyrovae", subtype="doc")


def skip_member(app: Sphinx, what: str, name: str, obj: Any, skip: bool, options: Any):
    """A public class or function of pyrovae that autodoc would skip for want of a docstring
    is a warning."""
    owned = (inspect.isclass(obj) or inspect.isroutine(obj)) and _owned(obj)
    if what == "module" and skip and owned and not name.startswith("_") and not obj.__doc__:
        logger.warning(f"pyrovae docs: {name} has no docstring", type="pyrovae", subtype="doc")
    return None


class ApiModule(SphinxDirective):
    """``.. api-module:: pyrovae.guides``: the module's docstring, its public classes and
    functions (``automodule``), then its public data, each with the attribute docstring of the
    module that defines it (a registry with a table of its entries)."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        name = self.arguments[0]
        module = importlib.import_module(name)
        text = [f".. automodule:: {name}", ""]
        own = ModuleAnalyzer.for_module(name).find_attr_docs()  # automodule documents these
        for attr in module.__all__:
            obj = getattr(module, attr)
            code = inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj)
            if ("", attr) not in own and not code:
                text += [f".. autodata:: {name}.{attr}", "   :no-value:", ""]
        node = nodes.container()
        nested_parse_with_titles(self.state, StringList(text, source=name), node)
        return node.children


class RegistryEntries(SphinxDirective):
    """``.. registry-entries:: pyrovae.inference.ESTIMATORS``: autodoc for each entry that
    pyrovae defines, under a heading per registry."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        registry = _resolve(self.arguments[0])
        done: set[int] = set()
        text: list[str] = []
        for entry in registry.values():
            target = _entry_target(entry)
            if not _owned(target) or id(target) in done:
                continue
            done.add(id(target))
            kind = "autoclass" if inspect.isclass(target) else "autofunction"
            text.append(f".. {kind}:: {target.__module__}.{target.__qualname__}")
            text += ["   :members:", ""] if inspect.isclass(target) else [""]
        node = nodes.container()
        nested_parse_with_titles(self.state, StringList(text, source=self.arguments[0]), node)
        return node.children


def _first_sentence(doc: str) -> str:
    """A docstring's first sentence (up to a full stop outside inline code), on one line."""
    paragraph = " ".join(line.strip() for line in doc.strip().split("\n\n")[0].splitlines())
    for i, char in enumerate(paragraph):
        outside_code = paragraph[:i].count("``") % 2 == 0
        if char == "." and paragraph[i + 1 : i + 2] in ("", " ") and outside_code:
            return paragraph[: i + 1]
    return paragraph


class PublicNames(SphinxDirective):
    """``.. public-names:: pyrovae``: a table of a module's ``__all__``, each name linked to
    where it is documented, with its one-line description."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:

        module = importlib.import_module(self.arguments[0])
        rows = [".. list-table::", "   :header-rows: 1", "", "   * - name", "     - what it is"]
        for name in module.__all__:
            obj = getattr(module, name)
            doc = obj.__doc__ if inspect.isclass(obj) or inspect.isroutine(obj) else None
            text = _first_sentence(doc or "\n".join(_defined_doc(name, obj)))
            rows += [f"   * - :py:obj:`{module.__name__}.{name}`", f"     - {text or ' '}"]
        node = nodes.container()
        nested_parse_with_titles(self.state, StringList(rows, source=self.arguments[0]), node)
        return node.children


def _public_key(app: Sphinx, obj: Any) -> str | None:
    """The documented name (in a public module) of ``obj``, found by identity."""
    cache = app.env.__dict__.setdefault("_pyrovae_public", {})
    if not cache:
        objects = app.env.get_domain("py").objects
        for key in sorted(objects, key=lambda k: (k.count("."), k)):  # shortest path first
            if not key.startswith("pyrovae"):
                continue
            try:
                found = _resolve(key)
            except Exception:
                continue
            cache.setdefault(id(found), key)
    return cache.get(id(obj))


def _candidates(node: nodes.Element) -> list[str]:
    """A reference's target as written, then relative to the class and module it sits in."""
    target = node.get("reftarget", "").lstrip("~.")
    found = [target]
    source = str(node.source or "")  # "…:docstring of pyrovae.inference.particles.draw_particles"
    if "docstring of pyrovae." in source:
        owner = source.split("docstring of ", 1)[1]
        while "." in owner:  # the object's own class, then its module: where it was written
            owner = owner.rpartition(".")[0]
            found.append(f"{owner}.{target}")
    module, cls = node.get("py:module"), node.get("py:class")
    if module and cls:
        found.append(f"{module}.{cls}.{target}")
    if module:
        found.append(f"{module}.{target}")
    head = target.split(".", 1)[0]  # a class named without its module (``VAE.generate``)
    found += sorted(
        f"{name}.{target}"
        for name, mod in sys.modules.items()
        if name.startswith("pyrovae") and head in vars(mod)
    )
    return found


def missing_reference(app: Sphinx, env: Any, node: nodes.Element, contnode: nodes.Node):
    """Resolve a reference to pyrovae's public page of the object it names; an object that
    exists but has no page of its own (a private helper) is shown as code without a link. A
    name that names nothing stays unresolved: a warning."""
    if node.get("refdomain") != "py":
        return None
    for target in _candidates(node):
        if not target.startswith("pyrovae."):
            continue
        try:
            obj = _resolve(target)
        except Exception:
            continue
        key = _public_key(app, obj)
        if key is not None and key != target:
            domain = env.get_domain("py")
            found = domain.resolve_any_xref(env, node["refdoc"], app.builder, key, node, contnode)
            if found:
                return found[0][1]
        return contnode
    return None


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("autodoc-process-docstring", process_docstring)
    app.connect("autodoc-skip-member", skip_member)
    app.connect("missing-reference", missing_reference)
    app.add_directive("registry-entries", RegistryEntries)
    app.add_directive("public-names", PublicNames)
    app.add_directive("api-module", ApiModule)
    return {"parallel_read_safe": True, "version": "1"}
