"""Reference and alternative sequence windows for VCF variants, read with pysam (FastaFile / VariantFile).

For an allele with REF of length ``r`` at 0-based ``start`` and ALT of length ``a`` (SNVs, MNVs, indels with
their VCF anchor base), both windows are exactly ``width`` bases and each is centred on its own allele:

- ref window: ``left = (width - r) // 2`` reference bases, REF, the reference after it, i.e. the reference
  ``[start - left, start - left + width)``;
- alt window (re-centred): ``left' = (width - a) // 2`` reference bases before ``start``, ALT, then the
  reference from ``start + r`` on, ``width - left' - a`` bases of it.

For an SNV and an odd ``width`` the allele sits at the exact centre, index ``(width - 1) // 2``. Windows that
run past a contig end are filled with N (counted as ``edge_padded``, still scored).

Every VCF allele yields one row; a row that cannot be scored carries its reason in ``status`` and is never
dropped silently: ``off_contig`` (contig not in the FASTA), ``beyond_contig_end`` (REF runs past the end of
the contig), ``ref_mismatch`` (REF differs from the FASTA, case-insensitive), ``symbolic_alt`` (``<DEL>``,
breakends, ``*``), ``missing_alt`` (``.``), ``invalid_allele`` (characters outside ACGTN) and
``allele_too_long`` (REF or ALT longer than the window).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

BAD_REASONS = ("off_contig", "beyond_contig_end", "ref_mismatch", "symbolic_alt", "missing_alt", "invalid_allele",
               "allele_too_long")
_ALLELE_CHARS = frozenset("ACGTN")
REGION_SIZE = 5_000_000
"""Bases of a contig per read task when the VCF is indexed (tabix/CSI): big contigs split into regions."""


@dataclass(frozen=True)
class Region:
    """A slice of the VCF to read: ``contig[start, end)`` by 0-based record start, or the whole file (contig None)."""

    contig: str | None = None
    start: int = 0
    end: int | None = None


def plan_regions(vcf_path: str, contig_lengths: dict[str, int], region_size: int = REGION_SIZE) -> list[Region]:
    """Read tasks for ``vcf_path``: per contig with records (split every ``region_size`` bases) when indexed,
    else one task for the whole file."""
    import pysam

    with pysam.VariantFile(vcf_path) as vcf:
        index = vcf.index
        contigs = list(index) if index is not None else None
    if contigs is None:
        return [Region()]
    regions = []
    for contig in contigs:
        length = contig_lengths.get(contig)
        if length is None:  # not in the FASTA: one task, whose records all come out as off_contig
            regions.append(Region(contig))
            continue
        for start in range(0, length, region_size):
            end = start + region_size
            regions.append(Region(contig, start, None if end >= length else end))
    return regions


def fetch_padded(fasta: Any, contig: str, start: int, end: int, contig_length: int) -> str:
    """Reference ``contig[start, end)`` upper-cased, N-filled where it runs past either end of the contig."""
    left = max(0, -start)
    right = max(0, end - contig_length)
    inner = fasta.fetch(contig, max(start, 0), min(end, contig_length)) if end > 0 and start < contig_length else ""
    return "N" * left + inner.upper() + "N" * right


def allele_windows(fasta: Any, contig: str, start: int, ref: str, alt: str, width: int,
                   contig_length: int) -> tuple[str, str, int, bool]:
    """``(ref window, alt window, ref window start, N-filled past a contig end)`` for one allele (module docstring)."""
    r, a = len(ref), len(alt)
    left = (width - r) // 2
    ref_start = start - left
    ref_seq = fetch_padded(fasta, contig, ref_start, ref_start + width, contig_length)
    alt_left = (width - a) // 2
    alt_end = start + r + width - alt_left - a
    alt_seq = (fetch_padded(fasta, contig, start - alt_left, start, contig_length) + alt.upper()
               + fetch_padded(fasta, contig, start + r, alt_end, contig_length))
    edge = min(ref_start, start - alt_left) < 0 or max(ref_start + width, alt_end) > contig_length
    return ref_seq, alt_seq, ref_start, edge


def allele_problem(ref: str, alt: str | None, width: int) -> str:
    """The reason an allele cannot be scored, from the alleles alone ("" when it can)."""
    if alt is None or alt == ".":
        return "missing_alt"
    if alt.startswith("<") or "[" in alt or "]" in alt or alt == "*":
        return "symbolic_alt"
    if not set(ref.upper()) <= _ALLELE_CHARS or not set(alt.upper()) <= _ALLELE_CHARS:
        return "invalid_allele"
    if len(ref) > width or len(alt) > width:
        return "allele_too_long"
    return ""


def variant_windows(vcf_path: str, reference_path: str, width: int, region: Region = Region()) -> Iterator[dict]:
    """One row per allele of the VCF records in ``region``: the record's fields, ``status`` ("" or a reason in
    `BAD_REASONS`), ``edge_padded``, and for good rows ``ref_sequence``, ``alt_sequence``, ``window_start``."""
    import pysam

    from raycad.data.records import RecordError

    with pysam.FastaFile(reference_path) as fasta, pysam.VariantFile(vcf_path) as vcf:
        lengths = dict(zip(fasta.references, fasta.lengths))
        records = iter(vcf if region.contig is None else vcf.fetch(region.contig, region.start, region.end))
        last = "the header"
        while True:
            try:
                record = next(records)
            except StopIteration:
                return
            except (ValueError, OSError) as err:  # htslib could not parse a line
                raise RecordError(f"{vcf_path}: the record after {last} cannot be read: {err}",
                                  "malformed_vcf") from err
            last = f"{record.chrom}:{record.pos}"
            if region.contig is not None and record.start < region.start:
                continue  # overlaps the region but starts in the previous one, which yields it
            yield from _record_rows(record, fasta, lengths, width)


def _record_rows(record: Any, fasta: Any, lengths: dict[str, int], width: int) -> Iterator[dict]:
    ref, start, contig = record.ref or "", record.start, record.chrom
    length = lengths.get(contig)
    if length is None:
        common = "off_contig"
    elif start + len(ref) > length:
        common = "beyond_contig_end"
    elif fasta.fetch(contig, start, start + len(ref)).upper() != ref.upper():
        common = "ref_mismatch"
    else:
        common = ""
    for alt in record.alts or (None,):
        row = {"chrom": contig, "pos": record.pos, "id": record.id or "", "ref": ref, "alt": alt or ".",
               "status": common or allele_problem(ref, alt, width), "edge_padded": False,
               "ref_sequence": "", "alt_sequence": "", "window_start": -1}
        if not row["status"]:
            ref_seq, alt_seq, window_start, edge = allele_windows(fasta, contig, start, ref, alt, width, length)
            row.update(ref_sequence=ref_seq, alt_sequence=alt_seq, window_start=window_start, edge_padded=edge)
        yield row
