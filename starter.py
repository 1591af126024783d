"""Treecast's command line (`python starter.py --help`); the commands are in treecast/cli/."""

from __future__ import annotations

from treecast.cli.main import build_parser, cli, main

__all__ = ["build_parser", "cli", "main"]

if __name__ == "__main__":
    cli()
