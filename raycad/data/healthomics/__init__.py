"""AWS HealthOmics for raycad: import labelled sequences into a sequence store, stream read sets into Ray Data.

Import (also ``raycad omics import``)::

    from raycad.data.healthomics import OmicsImportConfig, import_to_sequence_store
    cfg = OmicsImportConfig(store="my-store", role_arn="arn:aws:iam::123456789012:role/omics-import",
                            staging_uri="s3://my-bucket/raycad-staging")      # data = the bundled demo
    result = import_to_sequence_store(cfg)   # idempotent; result.failed lists failed sources
    result.uri("train")                      # healthomics://<storeId>?subjectId=human_nontata_promoters:train

Stream (also ``data.train: healthomics://...`` in a fine-tuning config, through `raycad.data.read_sequences`)::

    from raycad.data.healthomics import read_healthomics
    ds = read_healthomics("healthomics://1234567890?subjectId=human_nontata_promoters:train")
    # rows {sequence, label, id}; one Ray read task per read-set part; parts fetched inside the tasks

Modules: `importer` (FASTQ writing, upload, import jobs, manifest), `datasource` (the Ray Datasource and
URIs), `parts` (independent per-part reading of gzip FASTQ), `client` (boto3 clients with adaptive retries
and per-process rate limits, error messages), `progress` (rich waits), `cli`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {  # imported on first use, so that ``raycad --help`` does not import Ray
    "HealthOmicsError": "client", "OmicsConnection": "client", "omics_client": "client",
    "HealthOmicsDatasource": "datasource", "ReadSetQuery": "datasource", "load_manifest": "datasource",
    "parse_healthomics_uri": "datasource", "read_healthomics": "datasource",
    "ImportResult": "importer", "OmicsImportConfig": "importer", "ReadSetEntry": "importer",
    "import_to_sequence_store": "importer",
}

__all__ = [
    "HealthOmicsDatasource", "HealthOmicsError", "ImportResult", "OmicsConnection", "OmicsImportConfig",
    "ReadSetEntry", "ReadSetQuery", "import_to_sequence_store", "load_manifest", "omics_client",
    "parse_healthomics_uri", "read_healthomics",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
