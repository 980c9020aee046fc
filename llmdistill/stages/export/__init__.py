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

import logging
from pathlib import Path

from llmdistill.atomic import atomic_dir
from llmdistill.config import Config
from llmdistill.errors import UserError
from llmdistill.jsonl import iter_rows
from llmdistill.outputs import require_complete, stage_dir
from llmdistill.records import FilteredTrace
from llmdistill.stages.export.card import dataset_card
from llmdistill.stages.export.hub import push
from llmdistill.stages.export.rows import COLUMNS, SPLITS, trace_features, trace_row, view_features, view_rows
from llmdistill.stages.export.writers import write, write_dataset_dict

__all__ = ["COLUMNS", "SPLITS", "dataset_card", "export", "push", "view_rows"]
log = logging.getLogger(__name__)


def export(cfg: Config, command: str | None = None) -> dict:
    """Write the export folder; returns what was written (split and view sizes, the folder)."""
    require_complete(cfg, "filter")
    e = cfg.export
    out = Path(e.to) if e.to else Path(cfg.output_dir) / "export"
    traces = {"train": stage_dir(cfg, "filter") / "kept.jsonl", "rejected": stage_dir(cfg, "filter") / "rejected.jsonl"}
    read = lambda split: (trace_row(t) for t in iter_rows(traces[split], FilteredTrace))
    if not traces["train"].stat().st_size:
        raise UserError(f"{traces['train']} is empty: the filter kept no traces, so there is nothing to export")
    sizes, files = {}, {}
    # a new or empty folder, or an earlier export of this toolkit (moved aside, dated); anything else is refused
    with atomic_dir(out, kind="export", replace="move_aside") as tmp:
        # hf: the folder is a DatasetDict of its splits and views/ one of the views, so that
        # load_from_disk(DIR) and load_from_disk(DIR/views) load them; parquet and jsonl: data/ and
        # views/ files that the card's configs name, for load_dataset(DIR)
        data = "" if e.format == "hf" else "data/"
        for split in SPLITS if e.include_rejected else ("train",):
            if split == "train" or traces[split].stat().st_size:
                files[split], sizes[split] = write(tmp, f"{data}{split}", read(split), e.format, trace_features())
        for view in e.views:
            rows = view_rows(cfg, iter_rows(traces["train"], FilteredTrace), view)
            files[f"sft_{view}"], sizes[f"sft_{view}"] = write(tmp, f"views/sft_{view}", rows, e.format, view_features())
        if e.format == "hf":
            write_dataset_dict(tmp, [s for s in files if not s.startswith("sft_")])
            if e.views:
                write_dataset_dict(tmp / "views", [s for s in files if s.startswith("sft_")])
        (tmp / "README.md").write_text(dataset_card(cfg, sizes, files, command))
    log.info("exported %s to %s (%s)", sizes, out, e.format)
    if e.push_to_hub:
        push(out, e.push_to_hub, e.private)
    return {"folder": str(out), "format": e.format, "sizes": sizes, "pushed_to": e.push_to_hub}
