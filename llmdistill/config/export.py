"""The ``export`` section: the kept traces as a dataset others load (HF datasets, Parquet, JSONL)."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from llmdistill.config.base import Section, content, operational


class ExportConfig(Section):
    """What ``llmdistill export`` writes (each also a command-line flag)."""

    to: str | None = operational(None)  # the folder; None: <output_dir>/export
    format: Literal["hf", "parquet", "jsonl"] = content("hf")  # hf: load_from_disk; parquet: load_dataset("parquet"/the folder)
    include_rejected: bool = content(True)  # the rejected traces as a second split, each with its filter and reason
    # TRL-ready views: prompt/completion rows (conversational) for `trl sft`, one dataset per objective
    views: list[Literal["cot", "label", "step_by_step"]] = content(["cot", "step_by_step"])
    license: str = content("other")  # the dataset card's license: the teacher's terms decide what you may set here
    push_to_hub: str | None = operational(None)  # a repo id: upload after writing everything locally (token from HF_TOKEN)
    private: bool = operational(True)  # the visibility of a repo push_to_hub creates

    @model_validator(mode="after")
    def _private_needs_a_push(self):
        if not self.push_to_hub:
            self.refuse_unread(
                "export",
                set(type(self).model_fields) - {"private"},
                "without export.push_to_hub (it sets the visibility of the repo created there)",
            )
        return self
