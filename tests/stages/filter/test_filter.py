import json

from llmdistill.config.file import load_config
from llmdistill.config.filter import DEFAULT_ORDER
from llmdistill.jsonl import read_rows
from llmdistill.outputs import stage_dir
from llmdistill.records import FilteredTrace
from llmdistill.stages.filter.run import filter_traces
from llmdistill.stages.generate.run import generate
from tests.conftest import correct_script


def test_funnel_counts_add_up_and_every_rejection_has_a_reason(make_config, scripted):
    script = correct_script(3)  # problems 0-2 answered correctly
    script["Sam has 3 apples and gets 2 more. How many apples does Sam have?"] = ["Sam has 3 + 2 = 6 apples. The answer is 6."]
    script["Sam has 4 apples and gets 2 more. How many apples does Sam have?"] = ["Sam has some apples."]
    scripted.SCRIPT = script  # problem 5 has no script: answers -1
    cfg = load_config(make_config(filter={"order": [*DEFAULT_ORDER, "select"]}))
    generate(cfg)
    stats = filter_traces(cfg)
    kept = read_rows(stage_dir(cfg, "filter") / "kept.jsonl", FilteredTrace)
    rejected = read_rows(stage_dir(cfg, "filter") / "rejected.jsonl", FilteredTrace)
    assert stats["rows_in"] == len(kept) + len(rejected) == 6
    assert sorted(k.id for k in kept) == ["tr0", "tr1", "tr2"]
    assert all(k.verdict == "correct" and k.rationale and k.pred for k in kept)
    by_id = {r.id: r for r in rejected}
    assert by_id["tr3"].rejected_by == "correct" and "6 != 5" in by_id["tr3"].reason
    assert by_id["tr4"].rejected_by == "parse" and "The answer is" in by_id["tr4"].reason
    assert by_id["tr5"].rejected_by == "correct"
    funnel = {name: (f["in"], f["out"]) for name, f in stats["funnel"].items()}
    assert list(funnel)[:3] == ["truncated", "parse", "correct"]
    assert funnel["truncated"] == (6, 6) and funnel["parse"] == (6, 5) and funnel["correct"] == (5, 3) and funnel["select"] == (3, 3)
    assert stats["teacher_accuracy"] == 0.5
    assert json.loads((stage_dir(cfg, "filter") / "stats.json").read_text())["kept"] == 3


def test_truncated_traces_are_dropped_first(make_config, scripted, monkeypatch):
    from tests.conftest import ScriptedBackend

    scripted.SCRIPT = correct_script()
    original = ScriptedBackend.generate

    def truncating(self, prompts, params):
        out = original(self, prompts, params)
        out[0][0].finish_reason = "length"
        return out

    monkeypatch.setattr(ScriptedBackend, "generate", truncating)
    cfg = load_config(make_config())
    generate(cfg)
    stats = filter_traces(cfg)
    assert stats["rejected_by"] == {"truncated": 2}  # the first problem of each batch of 4
    assert stats["kept"] == 4
