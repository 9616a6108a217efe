"""Reading a source's raw files with their own column names checked, for the adapters."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from core.dataset_schema import DataError, conform


def find_file(root: Path, *patterns: str) -> list[Path]:
    """The files in ``root`` matching the first pattern that matches any; DataError if none."""
    if not root.is_dir():
        raise DataError(f"{root}: {'not a directory' if root.exists() else 'no such directory'}")
    for pattern in patterns:
        found = sorted(root.glob(pattern))
        if found:
            return found
    raise DataError(f"{root}: missing file {patterns[0]}")


def read_raw(path: Path, schema: pa.Schema) -> pa.Table:
    """A CSV (optionally gzipped) or parquet file with ``schema``'s columns present and cast.

    Extra columns are kept; errors name the file and the column as the file spells it.
    """
    try:
        if path.name.endswith(".parquet"):
            table = pq.read_table(path)
        else:
            table = pacsv.read_csv(
                path, convert_options=pacsv.ConvertOptions(strings_can_be_null=True)
            )
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: unreadable ({str(exc).splitlines()[0]})") from None
    return conform(table, schema, str(path))
