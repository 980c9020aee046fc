"""Writing rows as ``datasets`` would (``save_to_disk``, ``to_parquet``, ``to_json``), streamed:
batches of ``BATCH_ROWS`` typed rows go straight into their files, so memory stays flat whatever the
number of traces."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

from tqdm.auto import tqdm

BATCH_ROWS = 1000  # rows per Arrow batch written: datasets' own (config.DEFAULT_MAX_BATCH_SIZE), so files are laid out as before


def write(folder: Path, name: str, rows: Iterable[dict], fmt: str, features) -> tuple[str, int]:
    """One split or view in ``fmt``, streamed: ``rows`` is read once, ``BATCH_ROWS`` at a time, each
    batch typed by ``features`` and written straight into its file(s), as ``datasets`` would write
    the same rows (no cache to copy out of, so memory stays flat whatever the number of traces).
    Returns its path relative to the export folder and its row count."""
    tables = _tables(rows, features, name)
    if fmt == "hf":
        return name, _save_to_disk(folder / name, tables, features)
    rel = f"{name}.parquet" if fmt == "parquet" else f"{name}.jsonl"
    (folder / rel).parent.mkdir(parents=True, exist_ok=True)
    return rel, _to_parquet(folder / rel, tables, features) if fmt == "parquet" else _to_jsonl(folder / rel, tables)


def _tables(rows: Iterable[dict], features, desc: str) -> Iterator:
    """``rows`` as ``pa.Table``s of up to ``BATCH_ROWS`` rows with ``features``' Arrow schema."""
    import pyarrow as pa

    schema, it = features.arrow_schema, iter(rows)
    with tqdm(desc=desc, unit=" rows") as bar:
        while batch := list(islice(it, BATCH_ROWS)):
            bar.update(len(batch))
            yield pa.Table.from_pylist(batch, schema=schema)


def _to_parquet(path: Path, tables: Iterable, features) -> int:
    """What ``Dataset.to_parquet`` writes (its column options, content-defined chunking, a page
    index), in row groups of at most ``MAX_ROW_GROUP_SIZE`` (100MB) of Arrow data, as it sizes them."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import config
    from datasets.arrow_writer import get_parquet_column_options
    from datasets.utils.py_utils import convert_file_size_to_int

    schema, limit, cdc = features.arrow_schema, convert_file_size_to_int(config.MAX_ROW_GROUP_SIZE), config.DEFAULT_CDC_OPTIONS
    options = get_parquet_column_options(features, schema)
    group: list = []  # the tables of the row group being gathered
    rows = group_bytes = 0
    with pq.ParquetWriter(path, schema, use_content_defined_chunking=cdc, write_page_index=True, **options) as writer:
        for table in tables:
            if group and group_bytes + table.nbytes > limit:
                writer.write_table(pa.concat_tables(group))
                group, group_bytes = [], 0
            group.append(table)
            group_bytes += table.nbytes
            rows += table.num_rows
        if group:
            writer.write_table(pa.concat_tables(group))
        writer.add_key_value_metadata({"content_defined_chunking": json.dumps(cdc)})
    return rows


def _to_jsonl(path: Path, tables: Iterable) -> int:
    """What ``Dataset.to_json(lines=True)`` writes, byte for byte: each batch through pandas' writer
    (ints beside nulls stay ints, floats to 10 decimals, non-ASCII and "/" escaped)."""
    rows = 0
    with path.open("wb") as f:
        for table in tables:
            text = table.to_pandas(integer_object_nulls=True).to_json(orient="records", lines=True)
            f.write((text if text.endswith("\n") else text + "\n").encode("utf-8"))
            rows += table.num_rows
    return rows


def _save_to_disk(folder: Path, tables: Iterable, features) -> int:
    """What ``Dataset.save_to_disk`` writes, with no dataset to save: Arrow shards of at most
    ``MAX_SHARD_SIZE`` (500MB), then the ``state.json`` and ``dataset_info.json`` that
    ``load_from_disk`` reads, describing the dataset as ``Dataset.from_generator`` did (one
    ``train`` split of its ``generator`` builder)."""
    from datasets import DatasetInfo, SplitDict, SplitInfo, config
    from datasets.arrow_writer import ArrowWriter
    from datasets.utils.py_utils import asdict, convert_file_size_to_int

    folder.mkdir(parents=True)
    limit = convert_file_size_to_int(config.MAX_SHARD_SIZE)
    shards: list[Path] = []
    counts: list[tuple[int, int]] = []  # (rows, Arrow bytes) per shard

    def shard():
        shards.append(folder / f"data-{len(shards):05d}.arrow")  # numbered "-of-N" once N is known
        return ArrowWriter(features=features, path=str(shards[-1]), embed_local_files=True)

    writer, shard_bytes = shard(), 0
    for table in tables:
        if shard_bytes and shard_bytes + table.nbytes > limit:
            counts.append(writer.finalize())
            writer.close()
            writer, shard_bytes = shard(), 0
        writer.write_table(table)
        shard_bytes += table.nbytes
    counts.append(writer.finalize())
    writer.close()
    files = [p.rename(p.with_name(f"data-{i:05d}-of-{len(shards):05d}.arrow")) for i, p in enumerate(shards)]
    rows, nbytes = sum(n for n, _ in counts), sum(b for _, b in counts)

    state: dict[str, object] = {
        "_data_files": [{"filename": p.name} for p in files],
        "_fingerprint": _fingerprint(files),
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": "train",
    }
    splits = SplitDict(dataset_name="generator")
    splits.add(SplitInfo(name="train", num_bytes=nbytes, num_examples=rows, dataset_name="generator"))
    info = asdict(
        DatasetInfo(
            builder_name="generator",
            dataset_name="generator",
            config_name="default",
            version="0.0.0",
            features=features,
            splits=splits,
            download_size=0,
            dataset_size=nbytes,
            size_in_bytes=nbytes,
        )
    )
    (folder / config.DATASET_STATE_JSON_FILENAME).write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
    # first-level keys sorted, as save_to_disk does (a nested feature's fields keep their order)
    (folder / config.DATASET_INFO_FILENAME).write_text(json.dumps({k: info[k] for k in sorted(info)}, indent=2), encoding="utf-8")
    return rows


def _fingerprint(files: list[Path]) -> str:
    """The dataset's fingerprint: a hash of its Arrow files' bytes (read in chunks, never mapped),
    so an export rerun on the same traces writes the same folder."""
    h = hashlib.blake2b(digest_size=8)
    for path in files:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def write_dataset_dict(folder: Path, splits: list[str]) -> None:
    """What ``DatasetDict.save_to_disk`` writes beside its splits, so the folder loads as one."""
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": splits}))
