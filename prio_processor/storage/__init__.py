"""IO: local folders, gs:// and s3:// buckets, record files, completion markers."""

from .locations import (
    GcsLocation,
    LocalLocation,
    Location,
    StorageError,
    is_hidden,
    is_part_name,
    location,
    overlapping,
)
from .records import BadRecord, RecordWriter, read_all, read_records

__all__ = [
    "BadRecord",
    "GcsLocation",
    "LocalLocation",
    "Location",
    "RecordWriter",
    "StorageError",
    "is_hidden",
    "is_part_name",
    "location",
    "overlapping",
    "read_all",
    "read_records",
]
