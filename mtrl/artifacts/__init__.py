"""HDF5 artifact store: typed, fingerprinted, atomically written files that connect the stages."""

from mtrl.artifacts.schemas import SCHEMAS, Schema, schema_for
from mtrl.artifacts.store import (
    Artifact,
    ArtifactMeta,
    ArtifactWriter,
    Attributes,
    SchemaVersionError,
    damage,
    describe,
    fingerprint,
    open_artifact,
    package_versions,
    read_fingerprint,
)

__all__ = [
    "SCHEMAS",
    "Artifact",
    "ArtifactMeta",
    "ArtifactWriter",
    "Attributes",
    "Schema",
    "SchemaVersionError",
    "damage",
    "describe",
    "fingerprint",
    "open_artifact",
    "package_versions",
    "read_fingerprint",
    "schema_for",
]
