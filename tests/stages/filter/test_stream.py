"""The filter stage streams (rows a chunk at a time, a second pass for vote and select) and
keeps exactly what judging every row at once keeps: the same kept and rejected rows, in the same
order, with the same reasons and funnel."""

from __future__ import annotations

import json
import sys

import pytest

from llmdistill.answers.checking import check_trace
from llmdistill.config import FILTERS, Config
from llmdistill.jsonl import iter_rows, read_rows
from llmdistill.outputs import stage_dir
from llmdistill.prompts import answer_stops, load_prompt
from llmdistill.records import FilteredTrace, Trace
from llmdistill.stages.filter.run import filter_traces, run_filters
from llmdistill.stages.filter.stream import filter_passes
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))


def in_memory(cfg: Config):
    stop = answer_stops(load_prompt(cfg.data.prompt), cfg.data)
    rows = [check_trace(t, stop, cfg.data) for t in iter_rows(stage_dir(cfg, "generate") / "traces.jsonl", Trace)]
    return run_filters(rows, cfg)


def same_as_in_memory(cfg: Config) -> dict:
    kept, rejected, funnel = in_memory(cfg)
    stats = filter_traces(cfg, overwrite=True)
    dump = lambda rows: [r.model_dump() for r in rows]
    assert dump(read_rows(stage_dir(cfg, "filter") / "kept.jsonl", FilteredTrace)) == dump(kept)
    assert dump(read_rows(stage_dir(cfg, "filter") / "rejected.jsonl", FilteredTrace)) == dump(rejected)
    assert {k: (v["in"], v["out"]) for k, v in stats["funnel"].items()} == {k: (v["in"], v["out"]) for k, v in funnel.items()}
    assert list(stats["funnel"]) == list(funnel) and stats["kept"] == len(kept) and stats["rejected"] == len(rejected)
    assert not (stage_dir(cfg, "filter") / ".work").exists()
    return stats


FILTER_SETTINGS = {
    "default": {},
    "vote and select": {"order": FILTERS, "vote": {"min_agreement": 0.5}, "select": {"max_per_problem": 2, "strategy": "shortest"}},
    "group filters first": {
        "order": ["select", "parse", "dedup_exact", "vote", "truncated", "dedup_near", "correct", "length", "degenerate", "decontaminate"],
        "select": {"max_per_problem": 2, "strategy": "distinct"},
    },
}


@pytest.mark.parametrize("settings,workers", [(s, 0) for s in FILTER_SETTINGS] + [(s, w) for s in FILTER_SETTINGS for w in (1, 2)])
def test_streaming_keeps_what_the_in_memory_filters_keep_on_a_synthetic_corpus(tmp_path, monkeypatch, settings, workers):
    """In one process and with the text-heavy filters' features computed by worker processes."""
    import bench_filter

    monkeypatch.setattr("llmdistill.stages.filter.stream.CHUNK", 7)  # many chunk boundaries
    rows, _exact, _near = bench_filter.corpus(1500)
    for i, r in enumerate(rows):  # several samples per problem, for vote and select
        r["id"], r["sample"] = f"g{i // 3}", i
    bench_filter.make_run(tmp_path, rows)
    cfg = Config.model_validate(
        {**bench_filter.bench_config(tmp_path).model_dump(), "filter": {**FILTER_SETTINGS[settings], "workers": workers}}
    )
    stats = same_as_in_memory(cfg)
    assert stats["workers"] == workers and (stats["worker_cpu_seconds"] > 0) == bool(workers)
    assert stats["rejected_by"].get("dedup_exact") and stats["rejected_by"].get("dedup_near")  # the planted duplicates were found


def test_streaming_keeps_what_the_in_memory_filters_keep_on_svamp(tmp_path, monkeypatch):
    from llmdistill.config.file import load_config
    from llmdistill.stages.generate.run import generate

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("llmdistill.stages.filter.stream.CHUNK", 50)
    cfg = load_config(ROOT / "configs" / "svamp_palm.yaml", [f"output_dir={tmp_path}", f"filter.order={FILTERS}"])
    generate(cfg)
    stats = same_as_in_memory(cfg)
    assert stats["rows_in"] == 800 and stats["rejected_by"]["decontaminate"] > 0


def test_passes_start_at_each_group_filter():
    assert filter_passes(["truncated", "parse", "dedup_exact"]) == [["truncated", "parse", "dedup_exact"]]
    assert filter_passes(["parse", "vote", "length", "select"]) == [["parse"], ["vote", "length"], ["select"]]
    assert filter_passes(["select", "parse"]) == [[], ["select", "parse"]]


def test_group_filter_reasons_match_the_documented_rules(tmp_path):
    """vote and select through FILTER_FUNCTIONS (a whole list) still mean what they said."""
    from llmdistill.stages.filter.rules import FILTER_FUNCTIONS

    cfg = Config.model_validate(
        {
            "output_dir": str(tmp_path),
            "data": {"path": str(tmp_path)},
            "teacher": {"model_name_or_path": "x"},
            "filter": {"order": FILTERS, "select": {"max_per_problem": 1, "strategy": "shortest"}},
        }
    )
    mk = lambda i, s, rat: FilteredTrace(
        id=i, sample=s, question="q", prompt="", completion=rat, rationale=rat, answer_key="1", verdict="correct"
    )
    rows = [mk("a", 0, "one two three"), mk("a", 1, "one"), mk("b", 0, "x y")]
    assert FILTER_FUNCTIONS["select"](rows, cfg) == ["not among the 1 shortest traces of its problem", None, None]
    assert json.dumps(FILTER_FUNCTIONS["vote"](rows, cfg)) == json.dumps([None, None, None]) and rows[0].agreement == 1.0


def _accuracy_reference(rows: list[FilteredTrace]) -> dict:
    """The teacher's accuracy as the in-memory stage computed it (every row of a problem at hand)."""
    from collections import defaultdict

    from llmdistill.answers.checking import majority

    labelled = [r for r in rows if r.verdict != "unlabeled" and not r.rationalized]
    if not labelled:
        return {"traces": None}
    groups = defaultdict(list)
    for r in labelled:
        groups[r.id].append(r)
    first = sum(min(g, key=lambda r: r.sample).verdict == "correct" for g in groups.values())
    anyc = sum(any(r.verdict == "correct" for r in g) for g in groups.values())
    maj = 0
    for g in groups.values():
        top, votes = majority(r.answer_key for r in g)
        maj += votes > 0 and any(r.answer_key == top and r.verdict == "correct" for r in g)
    n = len(groups)
    return {
        "traces": round(sum(r.verdict == "correct" for r in labelled) / len(labelled), 4),
        "problems": n,
        "first_sample": round(first / n, 4),
        "majority_vote": round(maj / n, 4),
        "any_sample": round(anyc / n, 4),
    }


def test_streamed_teacher_accuracy_matches_counting_whole_problems():
    """The compact per-problem state (one answer and its count, counts once answers differ) gives
    what grouping every row of a problem gives: random problems, samples out of order, ties."""
    import random

    from llmdistill.stages.filter.run import teacher_accuracy

    rng = random.Random(0)
    for _ in range(2000):
        rows = []
        for pid in range(rng.randint(1, 4)):
            samples = list(range(rng.randint(1, 6)))
            rng.shuffle(samples)
            for s in samples:
                key = rng.choice(["1", "2", "3", None])
                verdict = "unparseable" if key is None else "correct" if key == "1" else "wrong"
                verdict = "unlabeled" if rng.random() < 0.1 else verdict
                rows.append(
                    FilteredTrace(
                        id=f"p{pid}",
                        sample=s,
                        question="q",
                        prompt="",
                        completion="",
                        answer_key=key,
                        verdict=verdict,
                        rationalized=rng.random() < 0.05,
                    )
                )
        rng.shuffle(rows)
        assert teacher_accuracy(rows) == _accuracy_reference(rows)


def test_teacher_accuracy_spilled_to_disk_by_bucket_is_the_same(monkeypatch):
    """Many problems, rows in random order, the per-row records spilled to disk every 100 rows
    (``buckets.SPILL``) and folded a bucket at a time: what grouping every row gives."""
    import random

    import llmdistill.buckets
    from llmdistill.stages.filter.run import teacher_accuracy

    monkeypatch.setattr(llmdistill.buckets, "SPILL", 100)
    rng = random.Random(1)
    rows = []
    for pid in range(3000):
        for s in range(rng.randint(1, 4)):
            key = rng.choice(["1", "2", "3", None])
            verdict = "unparseable" if key is None else "correct" if key == "1" else "wrong"
            rows.append(FilteredTrace(id=f"p{pid}", sample=s, question="q", prompt="", completion="", answer_key=key, verdict=verdict))
    rng.shuffle(rows)
    assert teacher_accuracy(rows) == _accuracy_reference(rows)


def test_near_dup_index_streams_like_one_batch(tmp_path):
    """Chunks (with duplicates inside one chunk and across chunks) give the pairs one call gives;
    MinHashes spilled to a file give what MinHashes in memory give."""
    import random

    from llmdistill.stages.filter.dedup import NearDupIndex
    from llmdistill.stages.filter.dedup import words as text_words

    rng = random.Random(1)
    vocab = [f"w{i}" for i in range(500)]
    texts = []
    for _i in range(600):
        if texts and rng.random() < 0.2:
            words = rng.choice(texts).split()
            words[rng.randrange(len(words))] = rng.choice(vocab)
            texts.append(" ".join(words))
        else:
            texts.append(" ".join(rng.choice(vocab) for _ in range(100)))
    docs = [text_words(t) for t in texts]
    sigs = NearDupIndex(0.8, 5, 128).minhashes(docs)
    whole = NearDupIndex(0.8, 5, 128).check(sigs)
    assert sum(h is not None for h in whole) > 50
    for size, spill in ((1, None), (7, "minhashes.bin"), (64, None)):
        index = NearDupIndex(0.8, 5, 128, spill=str(tmp_path / spill) if spill else None)
        index.RUN_CAP = 256  # many runs
        assert [h for i in range(0, len(texts), size) for h in index.check(sigs[i : i + size])] == whole


def test_a_script_without_a_main_guard_gets_a_one_line_error(tmp_path):
    """Workers start with spawn, which runs the calling script again: without the guard the
    worker dies, and the stage says what to do instead of a BrokenProcessPool traceback."""
    import subprocess

    import bench_filter

    bench_filter.make_run(tmp_path, bench_filter.corpus(200)[0])
    script = tmp_path / "unguarded.py"
    script.write_text(f"""import sys
sys.path.insert(0, {str(ROOT / "scripts")!r})
import bench_filter
from pathlib import Path
from llmdistill.stages.filter.run import filter_traces
cfg = bench_filter.bench_config(Path({str(tmp_path)!r}))
cfg.filter.workers = 1
filter_traces(cfg)
""")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode != 0
    assert 'needs its calls under `if __name__ == "__main__":`' in proc.stderr and "filter.workers: 0" in proc.stderr
