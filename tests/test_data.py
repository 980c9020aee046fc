import json

import pytest

from llmdistill.config import DataConfig
from llmdistill.data import load_problems
from llmdistill.errors import UserError

ROWS = [{"q": "one?", "a": 1}, {"q": "two?", "a": "2"}, {"q": "three?", "a": 3}]


def test_local_folder_with_split_files_and_field_mapping(tmp_path):
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    cfg = DataConfig(path=str(tmp_path), question_field="q", answer_field="a", max_train=2)
    problems = load_problems(cfg, "train")
    assert [(p.id, p.question, p.answer) for p in problems] == [("train-0", "one?", "1"), ("train-1", "two?", "2")]


def test_json_list_and_csv(tmp_path):
    (tmp_path / "rows.json").write_text(json.dumps(ROWS))
    assert len(load_problems(DataConfig(path=str(tmp_path / "rows.json"), question_field="q", answer_field="a"), "test")) == 3
    (tmp_path / "rows.csv").write_text("id,q,a\nx,one?,1\ny,two?,2\n")
    assert [p.id for p in load_problems(DataConfig(path=str(tmp_path / "rows.csv"), question_field="q", answer_field="a"), "test")] == [
        "x",
        "y",
    ]


def test_svamp_lines_load(tmp_path):
    svamp = tmp_path / "svamp_test.json"
    svamp.write_text(json.dumps({"input": "Body.\nHow many?", "label": "( 10.0 * 45.0 )"}) + "\n")
    [p] = load_problems(DataConfig(path=str(tmp_path), question_field="input", answer_field="label"), "test")
    assert p.answer == "( 10.0 * 45.0 )"


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(UserError, match="data file or folder not found"):
        load_problems(DataConfig(path=str(tmp_path / "nope.jsonl")), "train")
    with pytest.raises(UserError, match="no file for split 'train'"):
        load_problems(DataConfig(path=str(tmp_path)), "train")
    (tmp_path / "train.jsonl").write_text('{"question": "q"}\n')
    with pytest.raises(UserError, match="no field 'answer'"):
        load_problems(DataConfig(path=str(tmp_path)), "train")
    (tmp_path / "train.jsonl").write_text('{"question": "q", "answer": 1}\n{"question": \n')
    with pytest.raises(UserError, match="train.jsonl:2: malformed JSON"):
        load_problems(DataConfig(path=str(tmp_path)), "train")


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"q": ["one?", "two?"], "a": [1, 2]}), tmp_path / "test.parquet")
    problems = load_problems(DataConfig(path=str(tmp_path), question_field="q", answer_field="a"), "test")
    assert [(p.id, p.question, p.answer) for p in problems] == [("test-0", "one?", "1"), ("test-1", "two?", "2")]


def test_hub_ids_go_to_datasets_and_fail_clearly_offline(tmp_path, monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read at import time: set the imported flags too, or each call waits on the network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="could not load dataset 'someone/no-such-dataset' split 'train'"):
        load_problems(DataConfig(path="someone/no-such-dataset"), "train")


@pytest.mark.parametrize("n", [5, 70_000])  # in memory, and past buckets.SPILL: spilled to disk by bucket
def test_a_duplicate_id_is_refused_naming_it(tmp_path, n):
    rows = [{"id": f"p{k}", "q": "q?", "a": 1} for k in range(n)]
    rows[n - 1]["id"] = "p3"
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(path=str(tmp_path), question_field="q", answer_field="a", id_field="id")
    with pytest.raises(UserError, match=r"\(train\): duplicate id 'p3'"):
        load_problems(cfg, "train")
    rows[n - 1]["id"] = "fresh"
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(load_problems(cfg, "train")) == n
