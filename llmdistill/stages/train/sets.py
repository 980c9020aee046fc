"""The training and validation sets as the trainers read them, tokenized and written as they stream.

Rows are TRL's prepared SFT rows: ``input_ids`` and ``labels`` (the prompt masked with -100),
made here the way ``SFTTrainer._prepare_dataset`` makes them from prompt/completion pairs
(``SftRows``), a chunk of examples at a time with the fast tokenizer, so the trainer skips its
own preparation (five ``Dataset.map`` passes, each a full copy on disk, one process). Step-by-step
adds ``task`` (0 label, 1 rationale) and ``group`` (a trace's examples share one, numbered in order
of first appearance); answer_first's and offline top-k's rows carry their own columns. Given a
folder the rows go to Arrow files the datasets are memory-mapped from; without one (a few examples
in a test or a script) the datasets are built in memory. Held while the rows are written: for
step_by_step's groups a 16-byte digest of the (id, sample) and an 8-byte count per run of
consecutive examples of one group (a trace's examples are written next to each other, so a run
is a group), and a 16-byte digest of the id of each validation example.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from llmdistill.records import TrainExample
from llmdistill.stages.train.examples import answer_first_row, digest

log = logging.getLogger(__name__)

DIGEST = np.dtype([("hi", "<u8"), ("lo", "<u8")])  # a 16-byte digest as a sortable record

# Rows an Arrow record batch: opening the file touches every batch's header, and the kernel maps
# 64 KiB around each touch, so fewer, larger batches keep the resident file pages small.
WRITER_BATCH = 10_000

Rows = Callable[[list[TrainExample]], list[dict | None]]  # each example's row; None: nothing left to train on


def first_appearance(digests: bytes | bytearray | np.ndarray) -> np.ndarray:
    """For each key (16-byte digests, or an array of keys), the number of distinct keys seen before
    its first appearance: [n] int64. Keys that are all distinct (a trace's examples written as one
    run each) are numbered in order after one sort, without the index arrays."""
    keys = np.frombuffer(digests, dtype=DIGEST) if isinstance(digests, bytes | bytearray) else np.asarray(digests)
    ordered = np.sort(keys)
    distinct = len(keys) < 2 or bool((ordered[1:] != ordered[:-1]).all())
    del ordered
    if distinct:
        return np.arange(len(keys), dtype=np.int64)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two sequences share (TRL's ``common_prefix_length``)."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def cut(row: dict, max_length: int | None) -> dict | None:
    """TRL's truncation (``keep_start``) of ``input_ids`` and ``labels``, other columns as they are;
    None for a row whose labels are all masked after it (TRL drops those: they carry no loss)."""
    if max_length is not None and len(row["input_ids"]) > max_length:
        row = {**row, "input_ids": row["input_ids"][:max_length], "labels": row["labels"][:max_length]}
    return row if any(label != -100 for label in row["labels"]) else None


class SftRows:
    """Prompt/completion examples as ``SFTTrainer._prepare_dataset`` prepares them (non-conversational,
    ``completion_only_loss``): EOS appended to a completion that does not end with it; the prompt and
    prompt + completion tokenized as ``tokenizer(text=...)`` does; the completion starts where the two
    diverge; prompt tokens masked in ``labels``; ``cut`` at ``max_length``. Equal to TRL's rows
    (tests/stages/train/test_sets.py compares them)."""

    def __init__(self, tokenizer, max_length: int | None):
        self.tokenizer, self.max_length, self.warned = tokenizer, max_length, False

    def __call__(self, examples: list[TrainExample]) -> list[dict | None]:
        eos = self.tokenizer.eos_token
        prompts = [e.prompt for e in examples]
        whole = [e.prompt + (e.completion if e.completion.endswith(eos) else e.completion + eos) for e in examples]
        prompt_ids, ids = self.tokenizer(prompts)["input_ids"], self.tokenizer(whole)["input_ids"]
        rows: list[dict | None] = []
        for p, x in zip(prompt_ids, ids):
            n = common_prefix(p, x)
            if n < len(p) and not self.warned:
                self.warned = True
                log.warning(
                    "the tokenized prompt is not a prefix of the tokenized prompt+completion (tokens merge across the boundary): "
                    "the completion starts where they diverge, and this end of the prompt is left out of training: %r",
                    self.tokenizer.decode(p[n:]),
                )
            rows.append(cut({"input_ids": x, "labels": [-100] * n + x[n:]}, self.max_length))
        return rows


def answer_first_rows(tokenizer, max_length: int | None) -> Rows:
    """answer_first's rows (``examples.answer_first_row``), ``cut`` as TRL cuts pre-tokenized rows."""
    return lambda examples: [cut(answer_first_row(e, tokenizer), max_length) for e in examples]


class _Split:
    """One split's rows: an Arrow file (``path``) or a list, and its group keys."""

    def __init__(self, path: Path | None):
        self.path, self.n = path, 0
        self.rows: list[dict] | None = [] if path is None else None
        self.writer: Any = None
        self.run_keys, self.run_lengths, self.last = bytearray(), array("q"), b""  # groups, a run of consecutive examples at a time

    def add(self, row: dict, group: bytes | None) -> None:
        if self.rows is not None:
            self.rows.append(row)
        else:
            if self.writer is None:
                from datasets.arrow_writer import ArrowWriter

                assert self.path is not None
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.writer = ArrowWriter(path=str(self.path), writer_batch_size=WRITER_BATCH)
            self.writer.write(row)
        if group is not None:
            if group == self.last:
                self.run_lengths[-1] += 1
            else:
                self.run_keys += group
                self.run_lengths.append(1)
                self.last = group
        self.n += 1

    def dataset(self):
        import datasets

        if self.writer is not None:
            self.writer.finalize()
            self.writer = None
        if not self.n:
            return None
        ds = datasets.Dataset.from_list(self.rows) if self.rows is not None else datasets.Dataset.from_file(str(self.path))
        self.rows = None
        if not self.run_keys:
            return ds
        groups = np.repeat(first_appearance(self.run_keys), np.frombuffer(self.run_lengths, dtype=np.int64))
        self.run_keys, self.run_lengths = bytearray(), array("q")
        return ds.add_column("group", groups)


class ExampleSets:
    """The train and validation sets of a stream of examples.

    ``rows``: each example's prepared row (``SftRows``, ``answer_first_rows``), called a ``chunk`` of
    examples at a time; ``with_task``: step_by_step's task and group columns. ``add_row`` takes a
    row made elsewhere (offline top-k's, with the teacher's logprobs). ``masked`` counts the examples
    with nothing left to train on after the cut (dropped, as TRL drops them)."""

    def __init__(self, folder: Path | None, rows: Rows | None = None, with_task: bool = False, chunk: int = 512):
        self.rows, self.with_task, self.chunk = rows, with_task, chunk
        self.splits = {s: _Split(None if folder is None else folder / f"{s}.arrow") for s in ("train", "validation")}
        self.held_out = bytearray()  # digests of the validation examples' ids
        self.pending: list[TrainExample] = []
        self.masked = 0

    def add(self, e: TrainExample) -> None:
        if self.rows is None:
            raise ValueError("ExampleSets without a rows function takes ready rows (add_row)")
        self.pending.append(e)
        if len(self.pending) >= self.chunk:
            self._flush()

    def add_row(self, e: TrainExample, row: dict) -> None:
        self._flush()
        self._put(e, row)

    def _flush(self) -> None:
        if self.pending:
            assert self.rows is not None
            for e, row in zip(self.pending, self.rows(self.pending)):
                self._put(e, row)
            self.pending = []

    def _put(self, e: TrainExample, row: dict | None) -> None:
        if e.split == "validation":
            self.held_out += digest(e.id)
        if row is None:
            self.masked += 1
            return
        group = None
        if self.with_task:
            row = {**row, "task": 0 if e.task == "label" else 1}
            group = digest(e.id, e.sample)
        self.splits[e.split].add(row, group)

    def count(self, split: str) -> int:
        self._flush()
        return self.splits[split].n

    def validation_ids(self) -> np.ndarray:
        """The validation examples' ids, as sorted unique digests (``is_held_out``)."""
        self._flush()
        return np.unique(np.frombuffer(self.held_out, dtype=DIGEST))

    def datasets(self):
        """(train, validation) ``datasets.Dataset``s, None where a split has no example; call once."""
        self._flush()
        if self.masked:
            log.warning("%d examples have no completion token left within train.max_length: dropped, as TRL drops them", self.masked)
        return self.splits["train"].dataset(), self.splits["validation"].dataset()


def in_memory(examples: Iterable[TrainExample], rows: Rows, with_task: bool = False):
    """(train, validation) datasets of examples in memory (a test, a script)."""
    sets = ExampleSets(None, rows, with_task)
    for e in examples:
        sets.add(e)
    return sets.datasets()


def column(dataset, name: str, per_row=None) -> np.ndarray:
    """A column of a ``datasets.Dataset`` as numpy (or ``per_row`` of it, a pyarrow compute function
    such as ``list_value_length``), chunk by chunk of the memory-mapped table: a list column's
    lengths come from its offsets, without reading (or copying) its values. Through an indices
    mapping (a filtered or shuffled dataset: TRL's offline top-k rows) the rows are read 10,000 at
    a time instead."""
    if getattr(dataset, "_indices", None) is None:
        parts = [(per_row(c) if per_row else c).to_numpy(zero_copy_only=False) for c in dataset.data.column(name).chunks]
    else:
        batches = dataset.select_columns([name]).with_format("arrow").iter(batch_size=10_000)
        parts = [(per_row(b[name]) if per_row else b[name]).to_numpy() for b in batches]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def is_held_out(ids: np.ndarray, problem_id: str) -> bool:
    """Whether ``problem_id`` is among ``ExampleSets.validation_ids``."""
    key = np.frombuffer(digest(problem_id), dtype=DIGEST)
    i = int(np.searchsorted(ids, key)[0])
    return i < len(ids) and ids[i] == key[0]
