"""``raycad tune`` (placeholder added by the launch helper so the CLI imports; the tune helper replaces it)."""

from __future__ import annotations

import argparse


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Adds nothing yet."""
