"""`llmdistill export`: the SVAMP traces round-trip through HF datasets; the dataset card's YAML
parses and its numbers match stats.json; --push-to-hub against a local stand-in, and offline."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from llmdistill.cli import app
from llmdistill.config.file import load_config
from llmdistill.errors import UserError
from llmdistill.jsonl import read_rows
from llmdistill.records import FilteredTrace
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def svamp(tmp_path_factory):
    """The PaLM-540B SVAMP traces, generated (replayed) and filtered."""
    from llmdistill.stages.filter.run import filter_traces
    from llmdistill.stages.generate.run import generate

    out = tmp_path_factory.mktemp("svamp")
    cfg = load_config(ROOT / "configs" / "svamp_palm.yaml", [f"output_dir={out}"])
    generate(cfg)
    filter_traces(cfg)
    return out


def _cfg(svamp, *overrides):
    return load_config(ROOT / "configs" / "svamp_palm.yaml", [f"output_dir={svamp}", *overrides])


def test_hf_export_round_trips(svamp, monkeypatch, tmp_path):
    import datasets

    from llmdistill.stages.export import export

    monkeypatch.chdir(ROOT)
    done = export(_cfg(svamp, f"export.to={tmp_path / 'hf'}"))
    kept = read_rows(svamp / "filter" / "kept.jsonl", FilteredTrace)
    rejected = read_rows(svamp / "filter" / "rejected.jsonl", FilteredTrace)
    loaded = datasets.load_from_disk(str(tmp_path / "hf"))  # the folder the user named is a DatasetDict
    assert isinstance(loaded, datasets.DatasetDict) and list(loaded) == ["train", "rejected"]
    train, rej = loaded["train"], loaded["rejected"]
    assert (len(train), len(rej)) == (len(kept), len(rejected)) == (597, 203) and done["sizes"]["train"] == 597
    assert (
        train.features["correct"].dtype == "bool"
        and train.features["sample"].dtype == "int32"
        and train.features["temperature"].dtype == "float32"
    )
    first = train[0]
    assert (first["id"], first["question"], first["rationale"], first["answer"], first["gold"]) == (
        kept[0].id,
        kept[0].question,
        kept[0].rationale,
        kept[0].pred,
        kept[0].answer,
    )
    assert all(train["correct"]) and first["teacher"] == "PaLM-540B" and first["template_hash"] == kept[0].template_hash
    assert set(rej["rejected_by"]) == {r.rejected_by for r in rejected} and all(rej["reason"])
    views = datasets.load_from_disk(str(tmp_path / "hf" / "views"))
    assert sorted(views) == [f"sft_{v}" for v in sorted(_cfg(svamp).export.views)]
    sbs = datasets.load_from_disk(str(tmp_path / "hf" / "views" / "sft_step_by_step"))
    assert len(views["sft_step_by_step"]) == len(sbs)
    assert len(sbs) == 2 * 597 and sbs[0]["prompt"][-1]["role"] == "user" and sbs[0]["completion"][0]["role"] == "assistant"


def test_parquet_export_loads_by_its_card_and_the_card_matches_the_stats(svamp, monkeypatch, tmp_path):
    import datasets

    from llmdistill.stages.export import export

    monkeypatch.chdir(ROOT)
    export(_cfg(svamp, f"export.to={tmp_path / 'pq'}", "export.format=parquet", "export.views=[cot, label]"))
    loaded = datasets.load_dataset(str(tmp_path / "pq"))
    assert loaded["train"].num_rows == 597 and loaded["rejected"].num_rows == 203
    assert datasets.load_dataset(str(tmp_path / "pq"), "sft_label", split="train").num_rows == 597
    card = (tmp_path / "pq" / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["license"] == "other" and meta["size_categories"] == ["n<1K"] and "text-generation" in meta["task_categories"]
    stats = json.loads((svamp / "filter" / "stats.json").read_text())
    for name, f in stats["funnel"].items():
        assert f"| {name} | {f['in']} | {f['out']} | {f['in'] - f['out']} |" in card
    assert json.dumps(stats["rejected_by"]) in card and json.dumps(stats["teacher_accuracy_detail"]) in card


class FakeHub:
    calls: list = []

    def __init__(self, token):
        self.token = token

    def create_repo(self, repo_id, **kw):
        FakeHub.calls.append(("create_repo", repo_id, kw, self.token))

    def upload_folder(self, folder_path, repo_id, ignore_patterns=(), **kw):
        import fnmatch
        from pathlib import Path

        names = [p.name for p in Path(folder_path).iterdir() if not any(fnmatch.fnmatch(p.name, pat) for pat in ignore_patterns)]
        FakeHub.calls.append(("upload_folder", repo_id, sorted(names)))


def test_push_to_hub_uploads_the_written_folder(svamp, monkeypatch, tmp_path):
    import llmdistill.stages.export.hub as hub

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(hub, "hub_api", FakeHub)
    monkeypatch.setattr(FakeHub, "calls", [])
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    result = CliRunner().invoke(
        app,
        [
            "export",
            "configs/svamp_palm.yaml",
            "--set",
            f"output_dir={svamp}",
            "--to",
            str(tmp_path / "e"),
            "--push-to-hub",
            "me/svamp-rationales",
            "--public",
        ],
    )
    assert result.exit_code == 0, result.output
    assert FakeHub.calls == [
        ("create_repo", "me/svamp-rationales", {"repo_type": "dataset", "private": False, "exist_ok": True}, "hf_test_token"),
        ("upload_folder", "me/svamp-rationales", ["README.md", "dataset_dict.json", "rejected", "train", "views"]),
    ]
    assert "pushed to me/svamp-rationales" in result.output
    card = (tmp_path / "e" / "README.md").read_text()
    assert "llmdistill export configs/svamp_palm.yaml" in card and "--push-to-hub me/svamp-rationales" in card


def test_push_fails_in_one_line_after_writing_locally(svamp, monkeypatch, tmp_path):
    import huggingface_hub.constants

    from llmdistill.stages.export import export

    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    with pytest.raises(UserError, match=r"no Hugging Face token in HF_TOKEN; everything is written locally in"):
        export(_cfg(svamp, f"export.to={tmp_path / 'a'}", "export.push_to_hub=me/x"))
    assert (tmp_path / "a" / "README.md").is_file()
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network here: as a machine offline
    with pytest.raises(UserError, match=r"the Hub could not be reached or refused the upload") as e:
        export(_cfg(svamp, f"export.to={tmp_path / 'b'}", "export.push_to_hub=me/x"))
    assert "\n" not in str(e.value) and (tmp_path / "b" / "train").is_dir()


def test_export_never_deletes_a_folder_it_did_not_write(svamp, monkeypatch, tmp_path):
    """--to a user's folder is refused in one line (exit 2) and the folder is untouched; an
    earlier export is moved aside (dated), not deleted; an empty folder is simply used."""
    monkeypatch.chdir(ROOT)
    mine = tmp_path / "datasets"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    r = CliRunner().invoke(
        app, ["export", str(ROOT / "configs" / "svamp_palm.yaml"), "--set", f"output_dir={svamp}", "--to", str(mine), "--format", "jsonl"]
    )
    assert (
        r.exit_code == 2
        and "was not written by llmdistill" in r.output
        and str(mine) in r.output
        and len(r.output.strip().splitlines()) == 1
    )
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and (mine / "notes.txt").read_text() == "my notes"

    empty = tmp_path / "empty"
    empty.mkdir()
    for _ in range(2):  # into the empty folder, then over that export
        r = CliRunner().invoke(
            app,
            ["export", str(ROOT / "configs" / "svamp_palm.yaml"), "--set", f"output_dir={svamp}", "--to", str(empty), "--format", "jsonl"],
        )
        assert r.exit_code == 0, r.output
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("empty.replaced-")]
    assert len(aside) == 1 and (aside[0] / "README.md").is_file() and (empty / "README.md").is_file()


def test_each_format_is_what_datasets_writes_for_the_same_rows(svamp, monkeypatch, tmp_path):
    """The streamed writers against datasets' own: Dataset.from_generator over the same rows (the
    views' columns inferred, as export once did), then save_to_disk, to_parquet and to_json, give
    the same files byte for byte; only the fingerprint differs, and it is the same on a rerun."""
    import datasets

    from llmdistill.stages.export import COLUMNS, export, view_rows

    monkeypatch.chdir(ROOT)
    cfg = _cfg(svamp, "export.views=[cot, label, step_by_step]")
    for fmt in ("hf", "parquet", "jsonl"):
        export(_cfg(svamp, f"export.to={tmp_path / fmt}", f"export.format={fmt}", "export.views=[cot, label, step_by_step]"))
    kept = read_rows(svamp / "filter" / "kept.jsonl", FilteredTrace)
    mine = datasets.load_from_disk(str(tmp_path / "hf"))
    features = datasets.Features({k: datasets.Value(v) for k, v in COLUMNS.items()})
    cache = str(tmp_path / "cache")  # datasets' scratch, not the user's ~/.cache
    refs = {
        f"data/{s}": datasets.Dataset.from_generator(lambda s=s: iter(mine[s]), features=features, cache_dir=cache)
        for s in ("train", "rejected")
    }
    for view in ("cot", "label", "step_by_step"):
        rows = lambda view=view: view_rows(cfg, kept, view)
        refs[f"views/sft_{view}"] = datasets.Dataset.from_generator(rows, cache_dir=cache)
    for name, ref in refs.items():
        ref.save_to_disk(str(tmp_path / "ref" / name))
        ref.to_parquet(str(tmp_path / "ref" / f"{name}.parquet"))
        ref.to_json(str(tmp_path / "ref" / f"{name}.jsonl"), lines=True)
        written = tmp_path / "hf" / name.removeprefix("data/")
        for file in ("data-00000-of-00001.arrow", "dataset_info.json"):
            assert (written / file).read_bytes() == (tmp_path / "ref" / name / file).read_bytes(), (name, file)
        state, ref_state = (json.loads((d / "state.json").read_text()) for d in (written, tmp_path / "ref" / name))
        assert {**state, "_fingerprint": None} == {**ref_state, "_fingerprint": None}, name
        for fmt in ("parquet", "jsonl"):
            assert (tmp_path / fmt / f"{name}.{fmt}").read_bytes() == (tmp_path / "ref" / f"{name}.{fmt}").read_bytes(), (name, fmt)
    views = datasets.load_from_disk(str(tmp_path / "hf" / "views"))
    assert views["sft_cot"].features == refs["views/sft_cot"].features and views["sft_cot"].to_list() == refs["views/sft_cot"].to_list()
    export(_cfg(svamp, f"export.to={tmp_path / 'again'}", "export.views=[cot, label, step_by_step]"))
    for name in ("train", "rejected", "views/sft_cot", "views/sft_label", "views/sft_step_by_step"):
        assert (tmp_path / "again" / name / "state.json").read_text() == (tmp_path / "hf" / name / "state.json").read_text()


def test_a_split_past_the_shard_and_row_group_sizes_is_written_in_parts(svamp, monkeypatch, tmp_path):
    """Past datasets' shard size (hf) and row-group size (parquet) a split is cut into several of
    each, as datasets cuts it, and loads the same rows."""
    import datasets
    import pyarrow.parquet as pq

    import llmdistill.stages.export as ex
    import llmdistill.stages.export.writers as writers

    monkeypatch.chdir(ROOT)
    for fmt in ("hf", "parquet"):
        ex.export(_cfg(svamp, f"export.to={tmp_path / 'whole' / fmt}", f"export.format={fmt}", "export.views=[label]"))
    monkeypatch.setattr(writers, "BATCH_ROWS", 50)
    monkeypatch.setattr(datasets.config, "MAX_SHARD_SIZE", "200KB")  # the train split: 539,044 bytes of Arrow data
    monkeypatch.setattr(datasets.config, "MAX_ROW_GROUP_SIZE", "100KB")
    for fmt in ("hf", "parquet"):
        ex.export(_cfg(svamp, f"export.to={tmp_path / 'parts' / fmt}", f"export.format={fmt}", "export.views=[label]"))
    shards = sorted(p.name for p in (tmp_path / "parts" / "hf" / "train").glob("*.arrow"))
    assert shards == [f"data-0000{i}-of-00003.arrow" for i in range(3)]
    whole, parts = (datasets.load_from_disk(str(tmp_path / d / "hf")) for d in ("whole", "parts"))
    assert whole["train"].features == parts["train"].features and whole["train"].to_list() == parts["train"].to_list()
    assert json.loads((tmp_path / "parts" / "hf" / "train" / "dataset_info.json").read_text())["splits"]["train"]["num_examples"] == 597
    groups = pq.ParquetFile(tmp_path / "parts" / "parquet" / "data" / "train.parquet").metadata
    assert groups.num_row_groups > 5 and all(groups.row_group(i).num_rows % 50 == 0 for i in range(groups.num_row_groups - 1))
    whole, parts = (datasets.load_dataset(str(tmp_path / d / "parquet")) for d in ("whole", "parts"))
    assert whole["train"].features == parts["train"].features and whole["train"].to_list() == parts["train"].to_list()
