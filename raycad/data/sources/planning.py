"""Planning a read on the driver: list the files of a URI (local paths, globs, s3://, Hugging Face layouts),
choose a split, apply a manifest and decide which files the layout labels (`plan_sources`), then look at the
start of each file (`preflight`), before any Ray task reads a record."""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from raycad.data.fastx import detect_format as detect_fastx_format
from raycad.data.sources.options import (
    _GLOB_CHARS,
    _HF_SPLIT_FILE,
    _ID_ALIASES,
    _SPLIT_NAMES,
    SPLIT_ALIASES,
    Format,
    ReadOptions,
    SourceError,
    SourceFile,
    SourcePlan,
    _s3_error,
    _table_columns,
    read_options,
)
from raycad.runtime import get_logger
from raycad.storage import filesystem

if TYPE_CHECKING:
    import pyarrow.fs as pafs

log = get_logger("raycad.data.sources")


def plan_sources(uri: str | os.PathLike | Sequence[str | os.PathLike], options: ReadOptions | None = None, *,
                 split: str | None = None, **overrides: Any) -> SourcePlan:
    """Resolve ``uri`` to files and class names on the driver, without reading any record.

    ``options`` and keyword ``overrides`` (`ReadOptions` fields) are combined by `read_options`. Raises
    `SourceError` at once for a missing path, bucket or key, denied credentials, an empty match, a
    directory with several splits but no ``split`` chosen, or a manifest that cannot be used.
    """
    opts = read_options(options, **overrides)
    if split is not None and split not in SPLIT_ALIASES:
        split = _SPLIT_NAMES.get(split, split)
    uris = [os.fspath(u) for u in uri] if isinstance(uri, (list, tuple)) else [os.fspath(uri)]  # type: ignore[arg-type]
    if not uris:
        raise SourceError("no data URI given")
    files: list[SourceFile] = []
    filesystem = None
    for one in uris:
        fs, listed = _list_uri(one, split=split, opts=opts)
        if filesystem is not None and type(fs) is not type(filesystem):
            raise SourceError(f"cannot mix local and s3:// URIs in one read: {uris}")
        filesystem = fs
        files.extend(listed)
    if opts.manifest:
        files, opts = _apply_manifest(files, opts)
    elif opts.label_from == "manifest":
        raise SourceError("label_from='manifest' needs a manifest file (data.manifest)")
    files, names = _assign_file_labels(files, opts)
    opts = replace(opts, class_names=tuple(names) if names is not None else None)
    return SourcePlan(files, names, opts, filesystem, uris)


def _assign_file_labels(files: list[SourceFile], opts: ReadOptions) -> tuple[list[SourceFile], list[str] | None]:
    """Decide which files are labelled by their place in the layout, and infer class names if needed."""
    names = list(opts.class_names) if opts.class_names else None
    if opts.label_from == "file":
        candidates = files
        if not any(f.layout_class for f in files):
            raise SourceError("label_from='file' but no class name can be taken from the file names")
    elif opts.label_from == "auto" and opts.record_labels is None and not any(f.file_label for f in files):
        # Without a manifest: tables carry a label column; for FASTA/FASTQ/BAM the layout labels records that
        # have no label of their own, but only when it says something: several classes, or declared names.
        candidates = [f for f in files if f.format not in ("csv", "tsv", "parquet")]
        layout = {f.layout_class for f in candidates if f.layout_class}
        if not (len(layout) >= 2 or (names is not None and layout and layout <= set(names))):
            candidates = []
    else:
        candidates = []
    chosen = {id(f) for f in candidates}
    files = [replace(f, file_label=f.layout_class) if id(f) in chosen and f.file_label is None else f
             for f in files]
    if names is None:
        labels = sorted({f.file_label for f in files if f.file_label is not None})
        if labels and not all(label.isdigit() for label in labels):
            names = labels
            log.info("class names from the file layout / manifest: %s",
                     ", ".join(f"{i}={n}" for i, n in enumerate(names)))
    return files, names


def _list_uri(uri: str, *, split: str | None, opts: ReadOptions) -> tuple[pafs.FileSystem, list[SourceFile]]:
    import pyarrow.fs as pafs

    format = opts.format

    remote = uri.startswith(("s3://", "s3a://"))
    if uri.startswith("hf://") or (not remote and (format == "hf" or _looks_like_hub_id(uri))):
        uri = _hf_local_dir(uri)
        format = "parquet"
    elif format == "hf":  # the hub's parquet layout copied to S3
        format = "parquet"
    fs, path, scheme = filesystem(uri, opts.s3_endpoint, opts.s3_region, error=SourceError)
    display = f"{scheme}{path}" if scheme else path
    try:
        if any(c in path for c in _GLOB_CHARS):
            base = _glob_base(path)
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
            matched = [i for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatchcase(i.path, path)]
            if not matched:
                _raise_missing(fs, path, display, scheme, what="nothing matches")
            return fs, _describe(matched, base, scheme, format, split=None, explicit=True)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            return fs, _describe([info], str(PurePosixPath(path).parent), scheme, format, split=None, explicit=True)
        if info.type == pafs.FileType.Directory:
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
            files = [i for i in infos if i.type == pafs.FileType.File]
            return fs, _describe(files, path, scheme, format, split=split, explicit=False)
        _raise_missing(fs, path, display, scheme, what="no such file or directory")
    except SourceError:
        raise
    except OSError as err:
        if scheme:
            raise _s3_error(err, display) from None
        raise SourceError(f"{display}: cannot read: {err}", "unreadable_file") from None
    raise AssertionError("unreachable")


def _raise_missing(fs: pafs.FileSystem, path: str, display: str, scheme: str, what: str) -> None:
    import pyarrow.fs as pafs

    if scheme:
        bucket = path.split("/", 1)[0]
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise SourceError(f"{display}: bucket {bucket!r} does not exist (or is not visible with the "
                              f"credentials in use)", "missing_file")
        raise SourceError(f"{display}: no such key or prefix in bucket {bucket!r}", "missing_file")
    raise SourceError(f"{display}: {what}", "missing_file")


def _glob_base(pattern: str) -> str:
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        if any(c in part for c in _GLOB_CHARS):
            return "/".join(parts[:i]) or "/"
    return pattern


def _data_format(name: str) -> str | None:
    """The format of a file from its name; None for files that are not sequence data."""
    lower = name.lower().removesuffix(".gz")
    if lower.endswith((".parquet", ".pq")):
        found = "parquet"
    elif lower.endswith(".csv"):
        found = "csv"
    elif lower.endswith((".tsv", ".tab")):
        found = "tsv"
    elif lower.endswith((".bam", ".ubam", ".cram", ".sam")):
        found = "bam"
    else:
        found = detect_fastx_format(lower)
    return found


def _describe(infos: list, root: str, scheme: str, requested: Format, *, split: str | None,
              explicit: bool) -> list[SourceFile]:
    """SourceFiles for listed files: keep data files (and the chosen split), note each file's layout class."""
    entries = []
    for info in sorted(infos, key=lambda i: i.path):
        rel = PurePosixPath(info.path).relative_to(root) if info.path.startswith(root.rstrip("/") + "/") \
            else PurePosixPath(PurePosixPath(info.path).name)
        if not explicit and any(part.startswith((".", "_")) for part in rel.parts):
            continue  # hidden files, _SUCCESS markers, .cache folders of hub snapshots
        found = _data_format(rel.name)
        if explicit and requested != "auto":
            fmt = requested
        elif requested not in ("auto", "hf") and found is not None and found != requested:
            continue
        else:
            fmt = found
        if fmt is None:
            if explicit:
                raise SourceError(f"{scheme}{info.path}: unknown file type; set the format "
                                  f"(csv, tsv, parquet, fasta, fastq, bam)", "bad_option")
            continue
        entries.append((rel, info, fmt))
    if not entries:
        where = f"{scheme}{root}"
        raise SourceError(f"{where}: no sequence files found (csv, tsv, parquet, fasta/fastq[.gz], bam, cram)",
                          "missing_file")
    if not explicit:  # a directory: it may be laid out by split
        entries = _select_split(entries, split, f"{scheme}{root}")
    return [SourceFile(path=info.path, display=f"{scheme}{info.path}", format=fmt, size=info.size,
                       relative=str(rel), layout_class=_layout_class(rel))
            for rel, info, fmt in entries]


def _split_of(rel: PurePosixPath) -> tuple[str | None, PurePosixPath]:
    """(split name, path below the split folder) from a relative path; (None, rel) outside split layouts."""
    for i, part in enumerate(rel.parts[:-1]):
        if part.lower() in _SPLIT_NAMES:
            return _SPLIT_NAMES[part.lower()], PurePosixPath(*rel.parts[i + 1:])
    match = _HF_SPLIT_FILE.match(rel.name.lower())
    if match:  # Hugging Face layout: data/train-00000-of-00001.parquet
        return _SPLIT_NAMES[match.group(1)], PurePosixPath(rel.name)
    return None, rel


def _select_split(entries: list, split: str | None, where: str) -> list:
    tagged = [(_split_of(rel), rel, info, fmt) for rel, info, fmt in entries]
    found = sorted({s for (s, _), *_ in tagged if s is not None})
    if not found:
        return entries
    if split is None:
        raise SourceError(f"{where} holds several splits ({', '.join(found)}); choose one (split=...)",
                          "bad_option")
    chosen = [(below, info, fmt) for (s, below), rel, info, fmt in tagged if s == split]
    if not chosen:
        raise SourceError(f"{where} has no {split!r} split (found: {', '.join(found)})", "missing_file")
    return chosen


_DATA_SUFFIXES = (".fasta", ".fastq", ".fa", ".fq", ".fna", ".fas", ".csv", ".tsv", ".tab", ".parquet", ".pq",
                  ".bam", ".ubam", ".cram", ".sam")


def _layout_class(rel: PurePosixPath) -> str | None:
    """The class a file's place names: its folder below the (split) root, else its stem (``positive.fa.gz``)."""
    if len(rel.parts) >= 2:
        return rel.parts[-2]
    stem = rel.name[:-3] if rel.name.lower().endswith(".gz") else rel.name
    suffix = next((s for s in _DATA_SUFFIXES if stem.lower().endswith(s)), "")
    return stem[: len(stem) - len(suffix)] or None


# ---- Hugging Face ----------------------------------------------------------------------------------------------


def _looks_like_hub_id(uri: str) -> bool:
    """``owner/name`` that is not a local path and does not end like a data file."""
    return (re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", uri) is not None and not os.path.exists(uri)
            and _data_format(uri) is None)


def _hf_local_dir(uri: str) -> str:
    """A local directory holding the dataset's parquet files: ``uri`` itself, or a hub snapshot of it."""
    if not uri.startswith("hf://") and os.path.exists(os.path.expanduser(uri)):
        return uri
    repo_id = uri.removeprefix("hf://").removeprefix("datasets/").strip("/")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise SourceError(f"{uri}: not a local path, and huggingface_hub is not installed to download it "
                          f"(pip install huggingface_hub, or pass a local copy in the hub's parquet layout)",
                          "missing_file") from None
    try:
        local = snapshot_download(repo_id, repo_type="dataset", allow_patterns=["*.parquet", "**/*.parquet"])
        if not any(name.endswith(".parquet") for _, _, names in os.walk(local) for name in names):
            # Datasets stored in other formats have a parquet conversion on this branch.
            local = snapshot_download(repo_id, repo_type="dataset", revision="refs/convert/parquet",
                                      allow_patterns=["*.parquet", "**/*.parquet"])
    except Exception as err:  # noqa: BLE001 -- network, missing repo, auth: all end the same way for the user
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise SourceError(f"{uri}: no such local path, and it cannot be fetched as the Hugging Face dataset "
                          f"{repo_id!r} ({type(err).__name__}: {first_line}); offline, pass a local directory "
                          f"in the hub's parquet layout", "missing_file") from None
    log.info("Hugging Face dataset %s -> %s", repo_id, local)
    return local


# ---- manifests -------------------------------------------------------------------------------------------------


def _apply_manifest(files: list[SourceFile], opts: ReadOptions) -> tuple[list[SourceFile], ReadOptions]:
    """Labels from a CSV/TSV manifest: columns (path|file, label) label whole files, (id, label) records."""
    import pyarrow.csv as pacsv

    fs, path, scheme = filesystem(opts.manifest, opts.s3_endpoint, opts.s3_region, error=SourceError)
    display = f"{scheme}{path}" if scheme else path
    try:
        with fs.open_input_stream(path, compression="detect") as stream:
            delimiter = "\t" if path.lower().removesuffix(".gz").endswith((".tsv", ".tab")) else ","
            table = pacsv.read_csv(stream, parse_options=pacsv.ParseOptions(delimiter=delimiter),
                                   convert_options=pacsv.ConvertOptions(auto_dict_encode=False,
                                                                        strings_can_be_null=False))
    except FileNotFoundError:
        raise SourceError(f"{display}: manifest not found", "missing_file") from None
    except OSError as err:
        raise (_s3_error(err, display) if scheme else SourceError(f"{display}: cannot read manifest: {err}")) \
            from None
    except pa.ArrowInvalid as err:
        raise SourceError(f"{display}: malformed manifest: {err}", "malformed_record") from None
    cols = {c.lower(): c for c in table.column_names}
    label_col = cols.get(opts.label_column.lower()) or cols.get("label") or cols.get("class")
    key_col = next((cols[c] for c in ("path", "file", "filename", "uri") if c in cols), None)
    id_col = next((cols[c] for c in _ID_ALIASES if c in cols), None)
    if label_col is None or (key_col is None and id_col is None):
        raise SourceError(f"{display}: a manifest needs a label column ({opts.label_column!r}) and a 'path' or "
                          f"'id' column; found {table.column_names}", "malformed_record")
    labels = [str(v) if v is not None else None for v in table.column(label_col).to_pylist()]
    if key_col is not None:
        mapping = dict(zip((str(k) for k in table.column(key_col).to_pylist()), labels))
        out = []
        for f in files:
            keys = (f.display, f.path, f.relative, PurePosixPath(f.path).name)
            label = next((mapping[k] for k in keys if k in mapping), None)
            out.append(replace(f, file_label=label) if label is not None else f)
        if not any(f.file_label for f in out):
            raise SourceError(f"{display}: no listed path matches any of the {len(files)} files to read "
                              f"(e.g. {files[0].relative!r})", "malformed_record")
        return out, opts
    mapping = {str(k): v for k, v in zip(table.column(id_col).to_pylist(), labels) if v is not None}
    return files, replace(opts, record_labels=mapping)


# ---- preflight ---------------------------------------------------------------------------------------------------


PREFLIGHT_FILES = 32
"""`preflight` looks at the start of at most this many files per plan (each costs a request on S3)."""
PREFLIGHT_BYTES = 1 << 16


def preflight(plan: SourcePlan) -> None:
    """Look at the start of each file (up to `PREFLIGHT_FILES`) on the driver, before any Ray task runs.

    Empty files, a table with a header and no records, missing columns and unusable labels fail here, naming
    the file, instead of inside a read task. With ``bad_records="skip"`` an empty file is left to the readers,
    which skip and count it.
    """
    from raycad.data.records import check_preview

    for src in plan.files[:PREFLIGHT_FILES]:
        if src.size == 0:
            if plan.options.bad_records == "skip":
                continue
            raise SourceError(f"{src.display}: empty file (no header, no records)", "unreadable_file")
        if src.format not in ("csv", "tsv", "parquet"):
            continue
        preview = _preview_table(plan.filesystem, src)
        if preview is None:
            if plan.options.bad_records == "skip":
                continue
            raise SourceError(f"{src.display}: empty file (no header, no records)", "unreadable_file")
        _, label_col, _ = _table_columns(preview.column_names, src, plan.options)
        if plan.options.bad_records == "error":
            check_preview(src.display, preview, label_col, plan.options.class_names, src.file_label is not None)


def _preview_table(fs: pafs.FileSystem, src: SourceFile) -> pa.Table | None:
    """The first rows of a table file, all columns as strings (parquet: its first row group); None if empty."""
    if src.format == "parquet":
        import pyarrow.parquet as pq

        with fs.open_input_file(src.path) as handle:
            try:
                parquet = pq.ParquetFile(handle)
            except pa.ArrowInvalid as err:
                raise SourceError(f"{src.display}: not a readable parquet file: {err}", "unreadable_file") from None
            if parquet.metadata.num_rows == 0:
                return parquet.schema_arrow.empty_table()
            return parquet.read_row_group(0).slice(0, 1000)
    import pyarrow.csv as pacsv

    with fs.open_input_stream(src.path, compression="detect") as stream:
        head = stream.read(PREFLIGHT_BYTES)
    if not head.strip():
        return None
    if len(head) == PREFLIGHT_BYTES and b"\n" in head:  # cut at the last full line
        head = head[:head.rindex(b"\n") + 1]
    parse = pacsv.ParseOptions(delimiter="\t" if src.format == "tsv" else ",",
                               invalid_row_handler=lambda row: "skip")
    try:
        names = pacsv.open_csv(pa.BufferReader(head), parse_options=parse).schema.names
        return pacsv.read_csv(pa.BufferReader(head), parse_options=parse, convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in names}))
    except pa.ArrowInvalid as err:
        raise SourceError(f"{src.display}: malformed {src.format.upper()}: {err}", "malformed_record") from None
