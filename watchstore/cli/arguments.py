"""The ``watchstore`` command's arguments that need more than argparse: a schema named
``module:ATTR``, a key file, an etcd endpoint, versions and counts."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Any

from ..core.schema import Schema
from .output import CommandError, ExitCode


def load_schema(spec: str) -> Schema:
    """Import ``module:ATTR`` (ATTR may be dotted) and check that it is a Schema."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise CommandError(
            ExitCode.USAGE, f"--schema takes module:ATTR (e.g. myapp.models:SCHEMA), not {spec!r}"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: the program's own modules
    try:
        value: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            value = getattr(value, part)
    except ImportError as exc:
        raise CommandError(
            ExitCode.USAGE,
            f"--schema {spec}: cannot import {module_name!r} ({exc}); run from the directory "
            "that holds it or set PYTHONPATH",
        ) from None
    except AttributeError:
        raise CommandError(
            ExitCode.USAGE, f"--schema {spec}: {module_name} has no attribute {attribute!r}"
        ) from None
    if not isinstance(value, Schema):
        raise CommandError(
            ExitCode.USAGE, f"--schema {spec} is a {type(value).__name__}, not a watchstore.Schema"
        )
    return value


def required_schema(args: argparse.Namespace, why: str) -> Schema:
    """The ``--schema`` of a command that cannot run without it (``why``: what it does)."""
    if not args.schema:
        raise CommandError(
            ExitCode.USAGE,
            f"{args.command} {why}, which needs its schema: pass --schema module:ATTR "
            "(e.g. --schema myapp.models:SCHEMA)",
        )
    return load_schema(args.schema)


def read_key(args: argparse.Namespace) -> bytes | None:
    """The encryption key from --key-file: raw 16/24/32 bytes, or those bytes in hex."""
    if getattr(args, "key_file", None) is None:
        return None
    try:
        raw = Path(args.key_file).read_bytes()
    except OSError as exc:
        raise CommandError(ExitCode.USAGE, f"--key-file: {exc}") from None
    if len(raw) in (16, 24, 32):
        return raw
    try:
        key = bytes.fromhex(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) not in (16, 24, 32):
        raise CommandError(
            ExitCode.USAGE,
            f"--key-file {args.key_file}: a key is 16, 24 or 32 bytes, raw or in hex",
        )
    return key


def store_path(args: argparse.Namespace) -> Path:
    """PATH, for a command that also takes --etcd (which ``on_etcd`` found not given)."""
    if args.path is None:
        if args.command == "get":  # `get PATH TABLE` reads as `get TABLE ID` on etcd
            raise CommandError(
                ExitCode.USAGE, "get takes PATH TABLE ID, or --etcd URL --prefix P TABLE ID"
            )
        raise CommandError(ExitCode.USAGE, "give PATH (a store directory) or --etcd URL --prefix P")
    return Path(args.path)


def on_etcd(args: argparse.Namespace) -> bool:
    """Whether the command reads a store on etcd (--etcd URL --prefix P) rather than PATH."""
    if getattr(args, "etcd", None) is None:
        if getattr(args, "prefix", None) is not None:
            raise CommandError(ExitCode.USAGE, "--prefix goes with --etcd URL")
        return False
    if args.path is not None:
        raise CommandError(ExitCode.USAGE, "give either PATH or --etcd URL --prefix P, not both")
    if not args.prefix:
        raise CommandError(ExitCode.USAGE, "--etcd URL needs --prefix P (the store's key prefix)")
    return True


def positive(text: str) -> int:
    """An argument that is a positive integer."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a positive integer, not {text!r}")
    return int(text)


def seconds(text: str) -> float:
    """An argument that is a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"a positive number of seconds, not {text!r}")
    return value


def version(text: str) -> int:
    """An argument that is a version: a non-negative integer."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"a version is a non-negative integer, not {text!r}")
    return int(text)
