"""What the export holds: a trace's typed columns and the TRL-ready views' conversational rows."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from llmdistill.config import Config
from llmdistill.prompts import build_prompt, load_prompt
from llmdistill.records import FilteredTrace

SPLITS = ("train", "rejected")
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


def trace_row(t: FilteredTrace) -> dict:
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


def trace_features():
    import datasets

    return datasets.Features({k: datasets.Value(v) for k, v in COLUMNS.items()})


def view_features():
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
