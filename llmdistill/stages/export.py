"""``llmdistill export``: the filter stage's traces as a dataset the ecosystem loads.

Writes, under ``export.to`` (default ``<output_dir>/export``): the kept traces (and the rejected
ones, each with its filter and reason, as a second split) with typed columns; TRL-ready views
(conversational prompt/completion rows per objective, for ``trl sft``); and a dataset card
(``README.md``) with YAML metadata and where the data came from: teacher, prompt file and hash,
sampling, the filter funnel, the teacher's accuracy, the command and the config. Formats: ``hf``
(``datasets.load_from_disk(DIR)`` gives a DatasetDict of the splits, ``DIR/views`` one of the
views), ``parquet`` and ``jsonl`` (``datasets.load_dataset`` on the folder,
through the card's ``configs``). ``push_to_hub`` uploads the folder once everything is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from llmdistill.atomic import MARK, atomic_dir
from llmdistill.config import Config
from llmdistill.errors import UserError
from llmdistill.jsonl import iter_rows
from llmdistill.outputs import read_stats, require_complete, stage_dir
from llmdistill.prompts import build_prompt, load_prompt
from llmdistill.records import FilteredTrace

log = logging.getLogger(__name__)
SPLITS = ("train", "rejected")
BATCH_ROWS = 1000  # rows per Arrow batch written: datasets' own (config.DEFAULT_MAX_BATCH_SIZE), so files are laid out as before
# column -> datasets dtype; a row's value comes from the FilteredTrace field of the same name unless mapped
COLUMNS = {
    "id": "string",
    "sample": "int32",
    "question": "string",
    "rationale": "string",
    "thinking": "string",
    "answer": "string",
    "answer_key": "string",
    "gold": "string",
    "correct": "bool",
    "verdict": "string",
    "teacher": "string",
    "backend": "string",
    "template_hash": "string",
    "temperature": "float32",
    "top_p": "float32",
    "max_new_tokens": "int32",
    "seed": "int64",
    "finish_reason": "string",
    "prompt_tokens": "int32",
    "completion_tokens": "int32",
    "rationalized": "bool",
    "cut": "string",
    "created_at": "float64",
    "completion": "string",
    "rejected_by": "string",
    "reason": "string",
}


def _row(t: FilteredTrace) -> dict:
    s = t.sampling or {}
    return {
        **{k: getattr(t, k, None) for k in COLUMNS},
        "answer": t.pred,
        "gold": t.answer,
        "correct": t.verdict == "correct",
        "temperature": s.get("temperature"),
        "top_p": s.get("top_p"),
        "max_new_tokens": s.get("max_new_tokens"),
    }


def _features():
    import datasets

    return datasets.Features({k: datasets.Value(v) for k, v in COLUMNS.items()})


def _view_features():
    """The views' columns: what ``datasets`` infers from ``view_rows``, fixed so it need not infer."""
    import datasets

    message = {"role": datasets.Value("string"), "content": datasets.Value("string")}
    return datasets.Features(
        {
            "prompt": datasets.List(message),
            "completion": datasets.List(message),
            "id": datasets.Value("string"),
            "sample": datasets.Value("int64"),
            "task": datasets.Value("string"),
        }
    )


def view_rows(cfg: Config, traces: Iterable[FilteredTrace], objective: str) -> Iterator[dict]:
    """Conversational prompt/completion rows for ``trl sft`` (the prompt file's chat form)."""
    template = load_prompt(cfg.data.prompt)
    keep = cfg.train.thinking == "keep"

    def row(t: FilteredTrace, task: str, rationale: str) -> dict:
        prompt = build_prompt(template, t.question, cfg.student_shots(), chat=True, task=task)
        return {
            "prompt": prompt,
            "completion": [{"role": "assistant", "content": template.output_text(task, rationale, t.pred or "")}],
            "id": t.id,
            "sample": t.sample,
            "task": task,
        }

    for t in traces:
        if objective == "cot":
            yield row(t, "cot", t.training_rationale(keep, tags=True))
        elif objective == "label":
            yield row(t, "label", "")
        else:
            yield row(t, "label", "")
            if rationale := t.training_rationale(keep, tags=False):
                yield row(t, "rationale", rationale)


def _write(folder: Path, name: str, rows: Iterable[dict], fmt: str, features) -> tuple[str, int]:
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


def _dataset_dict(folder: Path, splits: list[str]) -> None:
    """What ``DatasetDict.save_to_disk`` writes beside its splits, so the folder loads as one."""
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": splits}))


def export(cfg: Config, command: str | None = None) -> dict:
    """Write the export folder; returns what was written (split and view sizes, the folder)."""
    require_complete(cfg, "filter")
    e = cfg.export
    out = Path(e.to) if e.to else Path(cfg.output_dir) / "export"
    traces = {"train": stage_dir(cfg, "filter") / "kept.jsonl", "rejected": stage_dir(cfg, "filter") / "rejected.jsonl"}
    read = lambda split: (_row(t) for t in iter_rows(traces[split], FilteredTrace))
    if not traces["train"].stat().st_size:
        raise UserError(f"{traces['train']} is empty: the filter kept no traces, so there is nothing to export")
    sizes, files = {}, {}
    # a new or empty folder, or an earlier export of this toolkit (moved aside, dated); anything else is refused
    with atomic_dir(out, kind="export", replace="move_aside") as tmp:
        # hf: the folder is a DatasetDict of its splits and views/ one of the views, so that
        # load_from_disk(DIR) and load_from_disk(DIR/views) load them; parquet and jsonl: data/ and
        # views/ files that the card's configs name, for load_dataset(DIR)
        data = "" if e.format == "hf" else "data/"
        for split in ("train", "rejected") if e.include_rejected else ("train",):
            if split == "train" or traces[split].stat().st_size:
                files[split], sizes[split] = _write(tmp, f"{data}{split}", read(split), e.format, _features())
        for view in e.views:
            rows = view_rows(cfg, iter_rows(traces["train"], FilteredTrace), view)
            files[f"sft_{view}"], sizes[f"sft_{view}"] = _write(tmp, f"views/sft_{view}", rows, e.format, _view_features())
        if e.format == "hf":
            _dataset_dict(tmp, [s for s in files if not s.startswith("sft_")])
            if e.views:
                _dataset_dict(tmp / "views", [s for s in files if s.startswith("sft_")])
        (tmp / "README.md").write_text(dataset_card(cfg, sizes, files, command))
    log.info("exported %s to %s (%s)", sizes, out, e.format)
    if e.push_to_hub:
        push(out, e.push_to_hub, e.private)
    return {"folder": str(out), "format": e.format, "sizes": sizes, "pushed_to": e.push_to_hub}


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "10M<n<100M"


def dataset_card(cfg: Config, sizes: dict, files: dict, command: str | None) -> str:
    """README.md: YAML metadata (license, task, size, configs that load each part) and provenance."""
    filt, gen = read_stats(cfg, "filter") or {}, read_stats(cfg, "generate") or {}
    template = load_prompt(cfg.data.prompt)
    meta: dict[str, object] = {
        "license": cfg.export.license,
        "task_categories": ["text-generation", "question-answering"],
        "language": ["en"],
        "size_categories": [_size_category(sizes.get("train", 0))],
        "tags": ["llmdistill", "distillation", "rationales", "chain-of-thought"],
    }
    if cfg.export.format != "hf":
        parts = {"default": [s for s in SPLITS if s in files], **{k: ["train"] for k in files if k.startswith("sft_")}}
        meta["configs"] = [
            {"config_name": name, "data_files": [{"split": s, "path": files[s if name == "default" else name]} for s in splits]}
            for name, splits in parts.items()
        ]
    funnel = [f"| {name} | {f['in']} | {f['out']} | {f['in'] - f['out']} |" for name, f in (filt.get("funnel") or {}).items()]
    sampling = {k: getattr(cfg.generate, k) for k in ("n", "temperature", "top_p", "max_new_tokens", "seed", "logprobs")}
    config = {k: json.loads(getattr(cfg, k).model_dump_json()) for k in ("data", "teacher", "generate", "filter")}
    config["teacher"] = {k: v for k, v in config["teacher"].items() if k in ("model_name_or_path", "backend", "dtype", "replay")}
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).rstrip(),
        "---",
        "",
        f"# Rationales from {cfg.teacher.model_name_or_path} on {cfg.data.path}",
        "",
        f"Teacher traces written by `{cfg.teacher.model_name_or_path}` ({cfg.teacher.backend}) with the few-shot chain-of-thought prompt "
        f"`{cfg.data.prompt}` (template hash `{template.hash}`, {cfg.data.num_shots if cfg.data.num_shots is not None else 'all'} shots), "
        f"parsed into rationale and answer, checked against the gold answers and filtered by llmdistill.",
        "",
        "| part | rows | what |",
        "|---|---|---|",
        f"| `train` | {sizes.get('train', 0)} | the traces the filters kept |",
        *(
            [
                f"| `rejected` | {sizes['rejected']} | every other trace, with the filter that dropped it (`rejected_by`) and why (`reason`) |"
            ]
            if "rejected" in sizes
            else []
        ),
        *[
            f"| `{k}` | {v} | prompt/completion rows (conversational) for `trl sft`, {k.removeprefix('sft_')} objective |"
            for k, v in sizes.items()
            if k.startswith("sft_")
        ],
        "",
        "## Teacher and sampling",
        "",
        f"- {gen.get('traces', '?')} traces for {gen.get('problems', '?')} problems; sampling: `{json.dumps(sampling)}`",
        f"- teacher accuracy on the split: {json.dumps(filt.get('teacher_accuracy_detail', {}))}",
        "",
        "## Filter funnel",
        "",
        "| filter | rows in | rows out | removed |",
        "|---|---|---|---|",
        *funnel,
        "",
        f"Rejected by: `{json.dumps(filt.get('rejected_by', {}))}`.",
        "",
        "## How it was made",
        "",
        "```",
        command or "llmdistill export (from Python)",
        "```",
        "",
        "```yaml",
        yaml.safe_dump(config, sort_keys=False).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def hub_api(token: str):
    """The Hugging Face Hub client (a seam for tests: no network there)."""
    from huggingface_hub import HfApi

    return HfApi(token=token)


def push(folder: Path, repo_id: str, private: bool) -> None:
    """Upload the export folder to a dataset repo; one line naming what failed, the local copy kept."""
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token:
        raise UserError(f"--push-to-hub {repo_id}: no Hugging Face token in HF_TOKEN; everything is written locally in {folder}")
    try:
        api = hub_api(token)
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type="dataset", ignore_patterns=[MARK]
        )  # the marker is local bookkeeping
    except Exception as e:  # offline, unreachable, refused: all end the same way for the user
        reason = " ".join(str(e).split())[:200]
        raise UserError(
            f"--push-to-hub {repo_id}: the Hub could not be reached or refused the upload ({type(e).__name__}: {reason}); "
            f"everything is written locally in {folder}"
        ) from None
    log.info("pushed %s to the Hub as dataset %s (%s)", folder, repo_id, "private" if private else "public")
