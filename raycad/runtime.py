"""Process-level helpers shared by every job: starting or joining Ray, and the console.

`init_ray` joins the cluster named by ``address`` or ``RAY_ADDRESS`` (what ``ray job submit`` sets), and
otherwise starts a private local instance (``address="local"``) so that a stale cluster on the machine is
never joined by accident.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from rich.console import Console
from rich.logging import RichHandler

console = Console(stderr=True)

_LOG_CONFIGURED = False


def get_logger(name: str) -> logging.Logger:
    """A logger under ``raycad`` that prints through rich (configured once per process)."""
    global _LOG_CONFIGURED
    if not _LOG_CONFIGURED:
        root = logging.getLogger("raycad")
        if not root.handlers:
            handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
            handler.setFormatter(logging.Formatter("%(message)s"))
            root.addHandler(handler)
        root.setLevel(os.environ.get("RAYCAD_LOG_LEVEL", "INFO"))
        _LOG_CONFIGURED = True
    return logging.getLogger(name if name.startswith("raycad") else f"raycad.{name}")


def init_ray(address: str | None = None, **kwargs: Any) -> None:
    """Start or join Ray once per process; a no-op when Ray is already initialised."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs.setdefault("log_to_driver", True)
    if not address:  # a private local instance needs no dashboard (and starts faster without one)
        kwargs.setdefault("include_dashboard", False)
    # Silence Ray's per-run metrics/usage chatter; it cannot phone home here anyway.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address=address or "local", **kwargs)
