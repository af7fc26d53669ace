"""Read accounting across Ray read tasks: `SkipCounter` (a named actor read tasks report to), its
`SkipReport`, and the per-file `_Tally` that raises or counts each bad record and counts the RNA records read
as DNA (`raycad.data.records.clean`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from raycad.data.sources.options import BadRecords, SourceError
from raycad.runtime import get_logger

log = get_logger("raycad.data.sources")


@dataclass
class SkipReport:
    """Records dropped while reading: counts per source file and reason, and a few example messages; and the
    records read as RNA (U read as T), which are kept."""

    by_source: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    rna_records: int = 0

    @property
    def by_reason(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for counts in self.by_source.values():
            for reason, n in counts.items():
                totals[reason] = totals.get(reason, 0) + n
        return dict(sorted(totals.items()))

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def merge(self, other: SkipReport) -> SkipReport:
        return SkipReport({**self.by_source, **other.by_source}, (self.examples + other.examples)[:20],
                          self.rna_records + other.rna_records)

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "by_reason": self.by_reason, "by_source": self.by_source,
                "examples": self.examples, "rna_records": self.rna_records}

    def __str__(self) -> str:
        if not self.total:
            return "no records skipped"
        reasons = ", ".join(f"{n} {reason}" for reason, n in self.by_reason.items())
        return f"{self.total} records skipped ({reasons})"


class _SkipCounterActor:
    """Holds the latest cumulative counts each read task reported for each (source, part).

    Counts are *replaced* per (source, part), not added, so a dataset that is executed several times (every
    epoch re-reads a lazy dataset) reports each skipped record once. ``part`` tells apart the blocks of a
    source that is not read file by file (the bundled demo, HealthOmics read sets).
    """

    def __init__(self) -> None:
        self._parts: dict[tuple[str, str], tuple[dict[str, int], list[str], int]] = {}

    def update(self, source: str, counts: dict[str, int], examples: list[str], part: str = "",
               rna: int = 0) -> None:
        self._parts[(source, part)] = (dict(counts), list(examples), rna)

    def snapshot(self) -> dict[tuple[str, str], tuple[dict[str, int], list[str], int]]:
        return self._parts


class SkipCounter:
    """Collects skipped-record counts (and RNA records read as DNA) from every Ray read task; pass one to
    `read_sequences(..., skips=)`.

    It is a thin handle on a named actor (no CPU reserved), so it can be pickled into tasks; `report`
    gathers the counts on the driver. Use one counter per split to report skips per split.
    """

    def __init__(self, name: str | None = None) -> None:
        import ray

        from raycad.runtime import init_ray

        init_ray()
        self.name = name or f"raycad-skips-{uuid.uuid4().hex[:10]}"
        actor_cls = ray.remote(num_cpus=0, max_restarts=0)(_SkipCounterActor)
        self._actor = actor_cls.options(name=self.name, get_if_exists=True).remote()

    def update(self, source: str, counts: dict[str, int], examples: list[str], part: str = "",
               rna: int = 0) -> None:
        import ray

        ray.get(self._actor.update.remote(source, counts, examples, part, rna))

    def report(self) -> SkipReport:
        import ray

        snapshot = ray.get(self._actor.snapshot.remote())
        examples = [e for _, (_, ex, _) in sorted(snapshot.items()) for e in ex][:20]
        by_source: dict[str, dict[str, int]] = {}
        for (src, _), (counts, _, _) in sorted(snapshot.items()):
            for reason, n in counts.items():
                if n:
                    by_source.setdefault(src, {})[reason] = by_source.get(src, {}).get(reason, 0) + n
        return SkipReport(by_source, examples, sum(rna for _, _, rna in snapshot.values()))


class _Tally:
    """Per-file bookkeeping inside a read task: raise or count bad records, count RNA records (`rna_records`),
    and report the counts to the counter."""

    def __init__(self, source: str, policy: BadRecords, counter: SkipCounter | None, part: str = "") -> None:
        self.source, self.policy, self.counter, self.part = source, policy, counter, part
        self.counts: dict[str, int] = {}
        self.examples: list[str] = []
        self.rna = 0
        self._dirty = False

    def bad(self, reason: str, message: str, *, always_skip: bool = False) -> None:
        """A bad record: raise `SourceError` under the "error" policy, else count it."""
        if self.policy == "error" and not always_skip:
            raise SourceError(message, reason)
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if len(self.examples) < 3:
            self.examples.append(message)
        self._dirty = True

    def rna_records(self, n: int) -> None:
        """``n`` more records held U (read as T): the ``on_rna`` of `raycad.data.records.clean`."""
        self.rna += n
        self._dirty = True

    def flush(self) -> None:
        if self._dirty:
            self._dirty = False
            if self.counter is not None:
                self.counter.update(self.source, self.counts, self.examples, part=self.part, rna=self.rna)

    def log_summary(self) -> None:
        if self.counts:
            detail = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items()))
            log.warning("%s: skipped %d records (%s)", self.source, sum(self.counts.values()), detail)
