"""The export's dataset card (``README.md``): YAML metadata the Hub and ``load_dataset`` read, and
where the data came from."""

from __future__ import annotations

import json

import yaml

from llmdistill.config import Config
from llmdistill.outputs import read_stats
from llmdistill.prompts import load_prompt
from llmdistill.stages.export.rows import SPLITS


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
