"""Writes docs/api.md, the API reference, from the docstrings of ``watchstore.__all__``.

``python -m tools.apiref`` rewrites the page; ``--check`` only says whether it is up to date
(exit 1 if not; tests/test_docs_api.py runs it). Each public name gets its signature (from
``inspect``, annotations as written) and its docstring; a class also gets its public members,
each with its signature and the first paragraph of its docstring. Constants and type aliases
have no ``__doc__``: their docstring is the string literal after their assignment (read from
the source, as Sphinx does), and so is a field's or an attribute's. Names are grouped by the
module that defines them (``SECTIONS``; a module not listed there gets a section titled by
the first line of its docstring) and kept in the order the module defines them.
"""

from __future__ import annotations

import ast
import enum
import functools
import inspect
import itertools
import re
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any, Final

import attrs

import watchstore

ROOT: Final = Path(__file__).parent.parent
PAGE: Final = ROOT / "docs" / "api.md"

SECTIONS: Final = [
    ("Opening a store", ["watchstore.service.store"]),
    ("Schema", ["watchstore.core.schema"]),
    ("Transactions and snapshots", ["watchstore.core.txn", "watchstore.core.state"]),
    ("Query conditions", ["watchstore.core.query"]),
    ("Events and watches", ["watchstore.core.events", "watchstore.service.watch"]),
    ("The Syncer", ["watchstore.service.syncer"]),
    ("Values: versions, metadata, changes", ["watchstore.core.model"]),
    (
        "Proposers",
        ["watchstore.core.proposer", "watchstore.log.proposer", "watchstore.etcd.proposer"],
    ),
    (
        "Durable stores on disk",
        ["watchstore.log.epochlog", "watchstore.log.segment", "watchstore.log.lock"],
    ),
    ("Leadership", ["watchstore.service.leadership"]),
    ("Errors", ["watchstore.core.errors"]),
]
"""Section titles and the modules whose public names each holds, in the page's order."""

SIGNATURE: Final = "```text"
"""The fence of a signature: not ``python``, since a signature is not code the tests of the
docs could run or type-check as they do every ``python`` block."""

HANDED_OUT: Final = frozenset(
    {"Store", "Replica", "Batch", "ReadTx", "Tx", "Snapshot", "Watch", "Lead", "Salvage"}
)
"""Classes that a program gets from the store and never makes: their constructors are left
out (as are those of the errors and protocols)."""

INTRO: Final = """\
# API reference

<!-- Made by `python -m tools.apiref` from the docstrings; do not edit by hand. -->

Everything public is a name of the `watchstore` package (`import watchstore as ws`); this
page lists each, with its signature and docstring, made from the code by
`python -m tools.apiref` (see [the docs' README](README.md)). The guides show them at work.

A program holds a `ws.Store`: `async with ws.open_store(schema, ...) as store:` opens one in
memory, on a directory (`path=`) or on etcd (`etcd=`), and closes it at the end of the block.
Its main methods are `view` and `snapshot` (reads), `update` and `batch` (writes), `watch`,
`view_and_watch` and `watch_from` (events), `wait_for`, `compact`, `leadership`, and `fork`.
`async with store.fork() as replica:` gives a `ws.Replica`: a read-only copy of the store in
the same process, kept in sync, with the same reads and watches (its writes raise
`ws.StoreError`).
"""


@functools.cache
def _module_tree(module: str) -> ast.Module:
    return ast.parse(Path(sys.modules[module].__file__ or "").read_text())


def _sources() -> dict[str, tuple[str, str]]:
    """Each public name: the module that defines it and its name there (from the
    ``from .x import y as Name`` lines of watchstore/__init__.py; a name defined there
    itself is its own)."""
    found = {name: ("watchstore", name) for name in watchstore.__all__}
    for node in _module_tree("watchstore").body:
        if isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 1:
            module = f"watchstore.{node.module}"
            for alias in node.names:
                found[alias.asname or alias.name] = (module, alias.name)
    return found


def _literal_docs(body: list[ast.stmt]) -> dict[str, tuple[int, str, str]]:
    """Names assigned in ``body`` (``self.x`` counts as ``x``) that a string literal follows:
    each with its line, the source of its annotation (``: T``) or else of its value
    (`` = v``, but nothing for ``self.x = v``), and the string."""
    docs = {}
    for node, after in itertools.pairwise(body):
        if not (
            isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            continue
        target: ast.expr
        if isinstance(node, ast.AnnAssign):
            target, shown = node.target, f": {ast.unparse(node.annotation)}"
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, shown = node.targets[0], f" = {ast.unparse(node.value)}"
        else:
            continue
        if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
            name = target.attr if target.value.id == "self" else ""
            if isinstance(node, ast.Assign):
                shown = ""  # `self.x = x`: the value is the caller's
        else:
            name = target.id if isinstance(target, ast.Name) else ""
        if name:
            docs[name] = (node.lineno, shown, inspect.cleandoc(after.value.value))
    return docs


def _definitions(module: str) -> dict[str, ast.stmt]:
    """The top-level statements of ``module`` by the name each defines."""
    found: dict[str, ast.stmt] = {}
    for node in _module_tree(module).body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            found[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found[node.target.id] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node
    return found


def _class_node(cls: type) -> ast.ClassDef:
    node = _definitions(cls.__module__)[cls.__name__]
    assert isinstance(node, ast.ClassDef), cls
    return node


def _field_docs(cls: type) -> dict[str, tuple[int, str, str]]:
    """The documented attributes of ``cls``: class-level ones, then those ``__init__`` sets."""
    node = _class_node(cls)
    docs = _literal_docs(node.body)
    for item in node.body:
        if isinstance(item, ast.FunctionDef) and item.name == "__init__":
            docs.update(_literal_docs(item.body))
    return {name: doc for name, doc in docs.items() if not name.startswith("_")}


class _Text(str):
    """An annotation as written in the source: shown as is, not quoted."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


def _default_sources(fn: Any) -> dict[str, str]:
    """The defaults of ``fn``'s parameters as written in its source."""
    node = ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(fn)))).body[0]
    assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef), fn
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    defaults = zip(positional[::-1], args.defaults[::-1], strict=False)  # the last have them
    found = {a.arg: ast.unparse(d) for a, d in defaults}
    keywords = zip(args.kwonlyargs, args.kw_defaults, strict=True)
    found |= {a.arg: ast.unparse(d) for a, d in keywords if d is not None}
    return found


def _signature(fn: Any, *, drop_self: bool) -> str:
    sig = inspect.signature(fn, follow_wrapped=True)
    params = []
    for p in sig.parameters.values():
        if isinstance(p.annotation, str):
            p = p.replace(annotation=_Text(p.annotation))
        if re.search(r" at 0x[0-9a-f]+>$", repr(p.default)):  # shown as its source instead
            p = p.replace(default=_Text(_default_sources(fn)[p.name]))
        params.append(p)
    if drop_self and params and params[0].name in ("self", "cls"):
        params = params[1:]
    result = sig.return_annotation
    if _kind(fn) == "async with" and isinstance(result, str):
        result = re.sub(r"^(Async)?Iterator\[(.*)\]$", r"\2", result)
    if isinstance(result, str):
        result = _Text(result)
    return str(sig.replace(parameters=params, return_annotation=result))


def _kind(fn: Any) -> str:
    wrapped = getattr(fn, "__wrapped__", None)
    if wrapped is not None and inspect.isasyncgenfunction(wrapped):
        return "async with"
    if wrapped is not None and inspect.isgeneratorfunction(wrapped):
        return "with"
    return "async def" if inspect.iscoroutinefunction(fn) else "def"


def _markdown(doc: str) -> str:
    """reST roles and literals as Markdown code (a literal block's ``::`` as ``:``: its
    indented lines are a Markdown code block already)."""
    doc = re.sub(r"::\n", ":\n", doc)
    doc = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", doc)
    return re.sub(r"``(.+?)``", r"`\1`", doc, flags=re.DOTALL)


def _first_paragraph(doc: str) -> str:
    return " ".join(doc.split("\n\n")[0].split())


def _own_doc(obj: Any) -> str:
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) and doc.strip() else ""


def _members(cls: type) -> list[tuple[int, str, str]]:
    """The public members ``cls`` defines: (source line, Markdown signature, docstring)."""
    members: list[tuple[int, str, str]] = []
    fields = _field_docs(cls)
    for name, (line, shown, doc) in fields.items():
        members.append((line, f"`{name}{shown}`", doc))
    for name, value in cls.__dict__.items():
        if name.startswith("_") or name in fields:
            continue
        if isinstance(value, property):
            getter = value.fget
            assert getter is not None
            result = inspect.signature(getter).return_annotation
            line = inspect.getsourcelines(getter)[1]
            members.append((line, f"`{name}: {result}` (read-only)", _own_doc(getter)))
        elif isinstance(value, staticmethod | classmethod):
            fn = value.__func__
            sig = _signature(fn, drop_self=isinstance(value, classmethod))
            line = inspect.getsourcelines(fn)[1]
            members.append((line, f"`{_kind(fn)} {name}{sig}`", _own_doc(fn)))
        elif inspect.isfunction(value):
            sig = _signature(value, drop_self=True)
            line = inspect.getsourcelines(value)[1]
            members.append((line, f"`{_kind(value)} {name}{sig}`", _own_doc(value)))
    return sorted(members)


def _public_base(base: type) -> str:
    """How the page names a base class: ``ws.X``, the nearest public class a private one
    derives from, or the name its own package exports it as."""
    if base.__module__.startswith("watchstore"):
        for cls in base.__mro__:
            if getattr(watchstore, cls.__name__, None) is cls:
                return f"ws.{cls.__name__}"
        return base.__qualname__
    package = base.__module__.split(".")[0]
    if package == "builtins":
        return base.__qualname__
    if getattr(sys.modules[package], base.__name__, None) is base:
        return f"{package}.{base.__name__}"
    return f"{base.__module__}.{base.__qualname__}"


def _class_entry(name: str, cls: type) -> list[str]:
    bases = [
        _public_base(b)
        for b in cls.__bases__
        if b not in (object, typing.Generic) and b.__name__ != "Protocol"
    ]
    header = f"class ws.{name}"
    if issubclass(cls, enum.Enum):
        header += f"({', '.join(bases)})"
    elif attrs.has(cls) or (
        "__init__" in cls.__dict__
        and name not in HANDED_OUT
        and not issubclass(cls, BaseException)
        and typing.Protocol not in cls.__mro__
    ):
        header += _signature(cls, drop_self=False)
        if bases:
            header += f"  # a {', '.join(bases)}"
    elif bases:
        header += f"({', '.join(bases)})"
    lines = [SIGNATURE, header, "```", "", _markdown(_own_doc(cls))]
    if issubclass(cls, enum.Enum):
        values = ", ".join(f"`{m.name}` ({m.value!r})" for m in cls)
        lines += ["", f"Members: {values}."]
    members = [] if issubclass(cls, enum.Enum) else _members(cls)
    if members:
        lines.append("")
        for _line, shown, doc in members:
            text = _markdown(_first_paragraph(doc))
            lines.append(f"- {shown}: {text}" if text else f"- {shown}")
    return lines


def _entry(name: str) -> list[str]:
    obj = getattr(watchstore, name)
    module, defined = _sources()[name]
    lines = [f"### ws.{name}", ""]
    if inspect.isclass(obj):
        return lines + _class_entry(name, obj)
    if inspect.isfunction(obj):
        kind = _kind(obj)
        call = f"ws.{name}{_signature(obj, drop_self=False)}"
        shown = f"{kind} {call}" if kind != "def" else f"def {call}"
        return [*lines, SIGNATURE, shown, "```", "", _markdown(_own_doc(obj))]
    # A constant or a type alias: its value as written, and the string literal after it.
    _line, _shown, doc = _literal_docs(_module_tree(module).body).get(defined, (0, "", ""))
    node = _definitions(module)[defined]
    assert isinstance(node, ast.AnnAssign | ast.Assign), name
    assert node.value is not None, name
    value = ast.unparse(node.value)
    if isinstance(obj, int | float | str) and repr(obj) != value:
        value = f"{obj!r}  # {value}"
    return [*lines, SIGNATURE, f"ws.{name} = {value}", "```", "", _markdown(doc)]


def _order(name: str) -> tuple[int, str, int]:
    module, defined = _sources()[name]
    titles = [modules for _title, modules in SECTIONS]
    section = next((i for i, mods in enumerate(titles) if module in mods), len(SECTIONS))
    within = titles[section].index(module) if section < len(SECTIONS) else 0
    return (section, f"{within:03}{module}", _definitions(module)[defined].lineno)


def _section_title(module: str) -> str:
    for title, modules in SECTIONS:
        if module in modules:
            return title
    doc = inspect.getdoc(sys.modules[module]) or module
    return _markdown(doc.split("\n")[0].rstrip("."))


def _anchors(headings: list[str]) -> dict[str, str]:
    """GitHub's anchor of each heading: lower case, punctuation dropped, spaces as dashes,
    and ``-1``, ``-2``... after a repeat (``ws.Prefix`` and ``ws.prefix``)."""
    anchors: dict[str, str] = {}
    seen: dict[str, int] = {}
    for heading in headings:
        anchor = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        anchors[heading] = f"{anchor}-{count}" if count else anchor
    return anchors


def render() -> str:
    """The page, as the code is now."""
    names = sorted(watchstore.__all__, key=_order)
    sections: dict[str, list[str]] = {}
    for name in names:
        sections.setdefault(_section_title(_sources()[name][0]), []).append(name)
    headings = ["Contents"]
    for title, members in sections.items():
        headings += [title, *(f"ws.{name}" for name in members)]
    anchor = _anchors(headings)
    lines = [INTRO, "## Contents", ""]
    for title, members in sections.items():
        links = ", ".join(f"[{n}](#{anchor['ws.' + n]})" for n in members)
        lines.append(f"- [{title}](#{anchor[title]}): {links}")
    for title, members in sections.items():
        lines += ["", f"## {title}"]
        for name in members:
            lines += ["", *_entry(name)]
    return "\n".join(line.rstrip() for line in lines).rstrip() + "\n"


def undocumented() -> list[str]:
    """The public names, and public members of public classes, that have no docstring."""
    missing = []
    for name in watchstore.__all__:
        obj = getattr(watchstore, name)
        if inspect.isclass(obj):
            if not _own_doc(obj):
                missing.append(name)
            if not issubclass(obj, enum.Enum):
                missing += [f"{name}.{shown}" for _line, shown, doc in _members(obj) if not doc]
        elif inspect.isfunction(obj):
            if not _own_doc(obj):
                missing.append(name)
        else:
            module, defined = _sources()[name]
            if defined not in _literal_docs(_module_tree(module).body):
                missing.append(name)
    return missing


def main(argv: list[str]) -> int:
    """Write docs/api.md, or with ``--check`` say whether it is up to date."""
    page = render()
    if argv == ["--check"]:
        if PAGE.read_text() == page:
            return 0
        print("docs/api.md is stale: run `python -m tools.apiref`", file=sys.stderr)
        return 1
    if argv:
        print("usage: python -m tools.apiref [--check]", file=sys.stderr)
        return 2
    PAGE.write_text(page)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
