"""The sets the trainers read: written an example at a time, memory-mapped from the run folder, and
the few bytes an example the stage keeps in their place equal the Python structures they replace."""

import random
import statistics
from pathlib import Path

import numpy as np

from llmdistill.jsonl import write_rows
from llmdistill.outputs import stage_dir
from llmdistill.records import FilteredTrace
from llmdistill.stages.train import train
from llmdistill.stages.train.examples import KeptTraces, digest, length_stats
from llmdistill.stages.train.sets import ExampleSets, first_appearance, is_held_out
from tests.conftest import run_to_filter


def test_groups_are_numbered_by_first_appearance_as_a_dict_numbers_them():
    rng = random.Random(0)
    keys = [(f"p{rng.randint(0, 30)}", rng.randint(0, 2)) for _ in range(500)]
    numbers: dict = {}
    expected = [numbers.setdefault(k, len(numbers)) for k in keys]
    assert first_appearance(b"".join(digest(*k) for k in keys)).tolist() == expected
    distinct = list(dict.fromkeys(keys))  # the train stage's case: one run of examples a group
    assert first_appearance(b"".join(digest(*k) for k in distinct)).tolist() == list(range(len(distinct)))


def test_held_out_ids_are_found_and_others_are_not(tmp_path):
    from llmdistill.records import TrainExample

    rows = lambda examples: [{"input_ids": [1, 2], "labels": [-100, 2]} for _ in examples]
    sets = ExampleSets(tmp_path / "sets", rows, chunk=8)
    for i in range(50):
        sets.add(TrainExample(id=f"p{i}", split="validation" if i % 3 == 0 else "train", prompt="q", completion="a"))
    ids = sets.validation_ids()
    assert [i for i in range(60) if is_held_out(ids, f"p{i}")] == list(range(0, 50, 3))
    train_set, validation = sets.datasets()
    assert len(train_set) + len(validation) == 50 and train_set.cache_files  # read from the Arrow file


def test_lengths_summary_equals_the_statistics_module():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 100, 101):
        values = rng.integers(1, 500, size=n).astype(np.int32)
        s = sorted(values.tolist())
        assert length_stats(values) == {
            "min": s[0],
            "p50": int(statistics.median(s)),
            "p95": s[min(n - 1, int(0.95 * n))],
            "max": s[-1],
            "mean": round(sum(s) / n, 1),
        }
    assert length_stats(np.array([], dtype=np.int32)) == {"n": 0}


def test_a_problems_traces_are_found_in_file_order(tmp_path):
    def trace(pid: str, sample: int) -> FilteredTrace:
        return FilteredTrace(id=pid, question="q", sample=sample, prompt="p", completion=f"{pid}#{sample}")

    path = tmp_path / "kept.jsonl"
    write_rows(path, [trace("a", 0), trace("b", 0), trace("a", 2), trace("c", 0), trace("a", 1)])
    kept = KeptTraces(path)
    assert [tr.completion for tr in kept] == ["a#0", "b#0", "a#2", "c#0", "a#1"] and not kept.empty()
    with kept.by_problem() as traces_of:
        assert [tr.sample for tr in traces_of("a")] == [0, 2, 1]
        assert [tr.completion for tr in traces_of("c")] == ["c#0"] and traces_of("zz") == []
    write_rows(path, [])
    assert KeptTraces(path).empty()


def test_the_stage_trains_on_sets_memory_mapped_from_its_folder_and_removes_them(make_config, scripted, monkeypatch):
    import llmdistill.stages.train.sft as sft

    cfg = run_to_filter(make_config, scripted, train={"mode": "step_by_step", "validation_fraction": 0.3, "group_by_length": True})
    real, files = sft.trainer_for, {}

    def spy(cfg, student_path, train_set, validation, *args, **kwargs):
        trainer = real(cfg, student_path, train_set, validation, *args, **kwargs)
        files["train"] = [f["filename"] for f in trainer.train_dataset.cache_files]  # TRL's tokenized copy
        files["validation"] = [f["filename"] for f in trainer.eval_dataset.cache_files]
        return trainer

    monkeypatch.setattr(sft, "trainer_for", spy)
    stats = train(cfg)
    folder = stage_dir(cfg, "train") / "datasets" / "rank-0"
    assert files["train"] and files["validation"]  # on disk, not in memory
    assert all(Path(f).parent == folder for f in files["train"] + files["validation"])
    assert not folder.parent.exists()  # removed once training ended
    lines = (stage_dir(cfg, "train") / "examples.jsonl").read_text().splitlines()
    assert stats["steps"] == 2 and len(lines) == stats["examples"] == stats["sft"]["preflight"]["examples"]


def test_rows_equal_the_rows_trl_prepares_itself(make_config, tiny_model, tmp_path):
    """``SftRows`` does in one pass what SFTTrainer's preparation does in five: same input_ids and
    labels, including a completion already ending in EOS, a cut at max_length, a prompt that fills
    max_length alone (dropped), and a prompt whose last token merges with the completion's first."""
    import datasets

    from llmdistill.backends.transformers import load_tokenizer
    from llmdistill.config.file import load_config
    from llmdistill.records import TrainExample
    from llmdistill.stages.train.sets import SftRows, in_memory
    from llmdistill.stages.train.trainers import trainer_for

    tok = load_tokenizer(tiny_model)
    examples = [
        TrainExample(id="a", prompt="Q: Sam has 3 apples. How many?\nA:", completion=" The answer is 3."),
        TrainExample(id="b", prompt="Q: 2 + 2?\nA:", completion=" 4" + tok.eos_token),
        TrainExample(id="c", prompt="Q: count\nA:", completion=" " + " ".join(["one two three"] * 20)),
        TrainExample(id="d", prompt="Q: " + "long " * 60 + "\nA:", completion=" 5"),
        TrainExample(id="e", prompt="Q: the app", completion="les are red."),
    ]
    cfg = load_config(make_config(train={"max_length": 40}))
    ours_train, _ = in_memory(examples, SftRows(tok, 40))
    raw = datasets.Dataset.from_list([{"prompt": e.prompt, "completion": e.completion} for e in examples])
    theirs = trainer_for(cfg, tiny_model, raw, None, str(tmp_path / "ckpt")).train_dataset
    assert [r["input_ids"] for r in ours_train] == [r["input_ids"] for r in theirs]
    assert [r["labels"] for r in ours_train] == [r["labels"] for r in theirs]
    assert len(ours_train) == 4  # "d": its prompt fills max_length, nothing to learn
    assert len(ours_train[2]["input_ids"]) == 40  # "c" cut
    merged = tok("Q: the app")["input_ids"]
    assert ours_train[3]["labels"].count(-100) < len(merged)  # "e": "app" + "les" merge, the completion starts before
    prepared = trainer_for(cfg, tiny_model, ours_train, None, str(tmp_path / "ckpt2"), prepared=True).train_dataset
    assert prepared.column_names == ["input_ids", "labels"] and len(prepared) == 4  # used as given


def test_group_sampler_gives_the_order_of_its_list_based_reference():
    """The numpy sampler against the lists it replaced: the same order for any groups (not
    contiguous, of any size), lengths with ties, and epochs."""
    from llmdistill.stages.train.trainers import GroupSampler

    def reference(groups, seed, epoch, lengths=None, groups_per_batch=1):
        rng = random.Random(seed + epoch)
        members: dict = {}
        for i, g in enumerate(groups):
            members.setdefault(g, []).append(i)
        groups_in_order = list(members.values())
        order = list(range(len(groups_in_order)))
        rng.shuffle(order)
        if lengths is not None:
            group_len = [max(lengths[i] for i in m) for m in groups_in_order]
            mega = 50 * groups_per_batch
            chunks = [order[i : i + mega] for i in range(0, len(order), mega)]
            order = [g for chunk in chunks for g in sorted(chunk, key=lambda g: -group_len[g])]
        return [i for g in order for i in groups_in_order[g]]

    rng = random.Random(3)
    for n, per_batch, runs in (
        (1, 1, False),
        (7, 1, False),
        (300, 4, False),
        (1000, 2, False),
        (1, 1, True),
        (300, 4, True),
        (1000, 2, True),
    ):
        groups = [rng.randint(0, n // 2 + 1) for _ in range(n)]
        if runs:  # the train stage's groups: runs of consecutive examples numbered 0, 1, 2... (no index array)
            groups = [0]
            while len(groups) < n:
                groups.append(groups[-1] + (rng.random() < 0.6))
        lengths = [rng.choice((5, 9, 9, 30)) for _ in range(n)]
        for with_lengths in (False, True):
            sampler = GroupSampler(groups, seed=7, lengths=lengths if with_lengths else None, groups_per_batch=per_batch)
            assert sampler.members is None or not runs  # runs take the path without the index array
            for epoch in range(3):
                want = reference(groups, 7, epoch, lengths if with_lengths else None, per_batch)
                assert list(sampler) == want


def test_plain_sft_groups_by_the_lengths_it_would_read_row_by_row(make_config, tiny_model, tmp_path):
    from llmdistill.config.file import load_config
    from llmdistill.records import TrainExample
    from llmdistill.stages.train.trainers import make_trainer

    cfg = load_config(make_config(train={"mode": "cot", "group_by_length": True}))
    examples = [TrainExample(id=str(i), task="cot", prompt=f"Q: {i}?\nA:", completion=" so" * (i % 7 + 1)) for i in range(30)]
    trainer = make_trainer(cfg, tiny_model, examples, str(tmp_path / "ckpt"))
    sampler = trainer._get_train_sampler()
    assert type(sampler).__name__ == "LengthGroupedSampler"
    assert sampler.lengths == [len(r["input_ids"]) for r in trainer.train_dataset]
