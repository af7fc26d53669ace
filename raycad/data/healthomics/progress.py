"""Small rich progress displays for the long waits of an import (uploads, store creation, import jobs)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from raycad.runtime import console


@contextmanager
def waiting(description: str) -> Iterator[callable]:
    """A spinner with elapsed time; yields ``update(text)`` to change the status line."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task(description, total=None)

        def update(text: str) -> None:
            progress.update(task, description=f"{description}: {text}")

        yield update


@contextmanager
def transfer(description: str, total_bytes: int) -> Iterator[callable]:
    """A byte-count bar; yields ``advance(n_bytes)`` (thread-safe, usable as a boto3 transfer Callback)."""
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task(description, total=total_bytes)

        def advance(n_bytes: int) -> None:
            progress.update(task, advance=n_bytes)

        yield advance
