"""Command-line flags the way gRPC interop binaries take them: --name=value or --name value."""

from __future__ import annotations

import argparse


def boolean(text: str) -> bool:
    """Parses true/false/1/0."""
    lowered = text.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"must be true or false, not {text!r}")


def add_bool(parser: argparse.ArgumentParser, name: str, help_text: str) -> None:
    """A boolean flag that may also stand alone (meaning true)."""
    parser.add_argument(name, type=boolean, nargs="?", const=True, default=False, help=help_text)
