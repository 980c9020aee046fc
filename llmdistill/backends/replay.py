"""Replay completions someone already has, so they go through the same filter/train/evaluate path.

Two file shapes: a JSON list of completion strings aligned with the split's problems by position
(several files are concatenated in order, e.g. PaLM's ``train_CoT_0.json`` + ``train_CoT_1.json``),
or JSONL rows ``{"id": ..., "text": ...}`` (``completion`` also accepted; optional ``sample``).
Files are chosen per split: ``teacher.replay: {train: [...], test: [...]}``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from llmdistill.backends import Backend, Completion, Request, SamplingParams
from llmdistill.errors import UserError

log = logging.getLogger(__name__)


def _load_files(paths: list[str]) -> tuple[list[str] | None, dict[tuple[str, int], str] | None]:
    """Positional completions (JSON lists) or keyed ones (JSONL rows); mixing the two is an error."""
    positional: list[str] = []
    keyed: dict[tuple[str, int], str] = {}
    for p in map(Path, paths):
        if not p.is_file():
            raise UserError(f"{p}: replay file not found")
        text = p.read_text(encoding="utf-8")
        if text.lstrip().startswith("["):
            items = json.loads(text)
            if not all(isinstance(x, str) for x in items):
                raise UserError(f"{p}: a replay JSON list must hold completion strings")
            positional.extend(items)
            continue
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key, body = (str(row["id"]), int(row.get("sample", 0))), row.get("text", row.get("completion"))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise UserError(f"{p}:{lineno}: expected a JSON row with 'id' and 'text'") from None
            if not isinstance(body, str):
                raise UserError(f"{p}:{lineno}: expected a JSON row with 'id' and 'text'")
            if key in keyed:
                raise UserError(f"{p}:{lineno}: duplicate replay row for id {key[0]!r} sample {key[1]}")
            keyed[key] = body
    if positional and keyed:
        raise UserError(f"replay files {paths} mix JSON lists and JSONL rows")
    return (positional or None), (keyed or None)


class ReplayBackend(Backend):
    name = "replay"
    supports_chat = True  # the prompt is only provenance here

    def __init__(self, model_name_or_path: str, replay: dict[str, list[str]] | None = None, split: str | None = None):
        self.model_name = model_name_or_path
        files = (replay or {}).get(split or "")
        if not files:
            raise UserError(
                f"teacher.backend is 'replay' but teacher.replay has no files for split {split!r} (has: {', '.join(replay or {}) or 'none'})"
            )
        self.files = files
        self.positional, self.keyed = _load_files(files)

    def check_alignment(self, problem_ids: list[str], first_rows: bool = False, rows: int | None = None) -> None:
        """Fail before any work when the replayed completions do not match the split.

        ``first_rows``: the problems are the split's first rows (``data.max_train``/``max_test``),
        so a positional list may be longer; its first entries are theirs. A positional list aligns
        with the split's rows (``rows``), whether or not some were left out: each problem reads the
        completion at its own row.
        """
        n, m = len(self.positional or []), rows if rows is not None else len(problem_ids)
        if self.positional is not None and (n < m or (n > m and not first_rows)):
            raise UserError(f"replay files {self.files} hold {n} completions for {m} problems")
        if self.keyed is not None:
            missing = sorted(set(problem_ids) - {i for i, _ in self.keyed})
            extra = [] if first_rows else sorted({i for i, _ in self.keyed} - set(problem_ids))
            if missing or extra:
                raise UserError(
                    f"replay files {self.files}: {len(missing)} problem ids have no completion (e.g. {missing[:3]}), {len(extra)} rows match no problem (e.g. {extra[:3]})"
                )

    def generate(self, requests: list[Request], params: SamplingParams) -> list[list[Completion]]:
        out = []
        for r in requests:
            if self.positional is not None:
                texts = [self.positional[r.index]] * params.n if params.n == 1 else None
                if texts is None:
                    raise UserError("replay of JSON lists has one completion per problem: set generate.n: 1")
            else:
                texts = []
                keyed = self.keyed or {}  # None only when the files hold no completion at all
                for s in range(params.n):
                    if (r.id, s) not in keyed:
                        raise UserError(f"replay has no completion for id {r.id!r} sample {s} (generate.n is {params.n})")
                    texts.append(keyed[(r.id, s)])
            # Replayed text was not produced here: its finish reason and token counts are unknown.
            out.append([Completion(text=t, finish_reason="unknown", prompt_tokens=0, completion_tokens=0) for t in texts])
        return out
