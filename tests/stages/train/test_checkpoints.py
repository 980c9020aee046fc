"""Checkpoints, resume, validation-based selection, LoRA merging, the saved student and its card."""

import json

import pytest

from llmdistill.config.file import load_config
from llmdistill.errors import UserError
from llmdistill.jsonl import read_rows
from llmdistill.outputs import stage_dir
from llmdistill.records import TrainExample
from llmdistill.stages.train import train
from tests.conftest import run_to_filter, weights_changed


def test_validation_split_is_held_out_and_selects_a_checkpoint(make_config, scripted):
    cfg = run_to_filter(make_config, scripted, train={"validation_fraction": 0.34, "eval_steps": 1, "max_steps": 2})
    stats = train(cfg)
    examples = read_rows(stage_dir(cfg, "train") / "examples.jsonl", TrainExample)
    val = {e.id for e in examples if e.split == "validation"}
    assert val and val.isdisjoint({e.id for e in examples if e.split == "train"})
    assert stats["best_eval_loss"] is not None and stats["sft"]["best_checkpoint"]
    assert all(not e.id.startswith("te") for e in examples)  # never the test split


def test_resume_continues_from_the_saved_step(make_config, scripted, monkeypatch):
    from transformers import TrainerCallback

    import llmdistill.stages.train.sft as train_mod

    cfg = run_to_filter(make_config, scripted, train={"max_steps": 4, "save_steps": 2, "per_device_train_batch_size": 1})

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise RuntimeError("simulated crash")

    real = train_mod.trainer_for

    def crashing(*a, **kw):
        t = real(*a, **kw)
        t.add_callback(Crash())
        return t

    monkeypatch.setattr(train_mod, "trainer_for", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg)
    assert (stage_dir(cfg, "train") / "checkpoints" / "checkpoint-2").is_dir()
    monkeypatch.setattr(train_mod, "trainer_for", real)
    stats = train(cfg)
    assert stats["sft"]["resumed_from"].endswith("checkpoint-2")
    assert stats["steps"] == 4
    trained_steps = [h["step"] for h in stats["sft"]["log_history"] if "loss" in h]
    assert trained_steps[-1] == 4 and 3 in trained_steps
    # the resumed student is the one an uninterrupted run trains, tied head included (transformers
    # warns that lm_head.weight is missing from the checkpoint: it is the embedding matrix)
    import torch
    from safetensors.torch import load_file

    whole = run_to_filter(
        make_config,
        scripted,
        output_dir=str(stage_dir(cfg, "train").parent.parent / "whole"),
        train=cfg.train.model_dump(include={"max_steps", "save_steps", "per_device_train_batch_size"}),
    )
    train(whole)
    resumed, uninterrupted = (load_file(stage_dir(c, "train") / "model" / "model.safetensors") for c in (cfg, whole))
    assert resumed.keys() == uninterrupted.keys() and all(torch.allclose(resumed[k], uninterrupted[k], atol=1e-6) for k in resumed)


def test_changed_content_never_resumes_stale_checkpoints_and_never_deletes_them(make_config, scripted):
    cfg = run_to_filter(make_config, scripted, train={"max_steps": 2, "save_steps": 1})
    train(cfg)
    cfg2 = load_config(make_config(train={"max_steps": 2, "save_steps": 1, "learning_rate": 1e-3}))
    with pytest.raises(UserError, match="train.learning_rate"):
        train(cfg2)
    stats = train(cfg2, overwrite=True)
    assert stats["sft"]["resumed_from"] is None
    [aside] = stage_dir(cfg, "train").parent.glob("train.replaced-*")
    assert (aside / "checkpoints" / "checkpoint-2").is_dir() and (aside / "model" / "model.safetensors").is_file()


def test_lora_trains_and_saves_a_merged_plain_model(make_config, scripted):
    cfg = run_to_filter(make_config, scripted, train={"lora": {"r": 4, "alpha": 8}, "learning_rate": 1e-2})
    stats = train(cfg)
    assert stats["steps"] == 2
    model_dir = stage_dir(cfg, "train") / "model"
    assert not (model_dir / "adapter_config.json").exists()
    assert weights_changed(cfg)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(model_dir)


def test_model_card_describes_the_student(make_config, scripted):
    cfg = run_to_filter(make_config, scripted, train={"mode": "step_by_step"})
    train(cfg)
    card = (stage_dir(cfg, "train") / "model" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers")
    assert "mode-step_by_step" in card and "## Training data" in card and "train_loss" in card and "alpha: 0.5" in card
    stats = json.loads((stage_dir(cfg, "train") / "stats.json").read_text())
    held = stats["sft"]["preflight"]["validation_examples"]
    assert f"- examples: {stats['examples']} " in card and f"of them {held} held out for validation (not trained on)" in card


def test_pruned_student_is_rebuilt_when_its_recipe_changes(make_config, scripted):
    from transformers import AutoConfig

    from llmdistill.student import init_path, materialize_student

    cfg = load_config(make_config(student={"keep_layers": "every_other"}))
    assert AutoConfig.from_pretrained(materialize_student(cfg, init_path(cfg))).num_hidden_layers == 2
    cfg = load_config(make_config(student={"keep_layers": [0, 1, 2]}))
    assert AutoConfig.from_pretrained(materialize_student(cfg, init_path(cfg))).num_hidden_layers == 3


@pytest.mark.slow
def test_sigkill_during_training_then_resume_with_logging_steps_changed(tmp_path, tiny_model):
    """A real `llmdistill train` killed mid-run continues from its checkpoint: logging_steps is operational."""
    import json
    import subprocess
    import sys

    import yaml

    from llmdistill.stages.filter.run import filter_traces
    from llmdistill.stages.generate.run import generate
    from tests.conftest import ROOT, write_jsonl
    from tests.processes import kill_when, start_cli

    train_rows = [
        {"id": f"tr{i}", "question": f"Sam has {i} apples and gets 2 more. How many apples does Sam have?", "answer": str(i + 2)}
        for i in range(8)
    ]
    write_jsonl(tmp_path / "data" / "train.jsonl", train_rows)
    write_jsonl(tmp_path / "data" / "test.jsonl", train_rows[:2])
    write_jsonl(
        tmp_path / "replay.jsonl", [{"id": r["id"], "text": f"{r['answer']} apples. The answer is {r['answer']}."} for r in train_rows]
    )
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(tmp_path / "run"),
                "data": {"path": str(tmp_path / "data"), "prompt": str(ROOT / "prompts" / "arithmetic_cot.yaml"), "num_shots": 0},
                "teacher": {"model_name_or_path": "replayed", "backend": "replay", "replay": {"train": [str(tmp_path / "replay.jsonl")]}},
                "filter": {
                    "order": ["truncated", "parse", "correct", "length", "degenerate", "dedup_exact"]
                },  # toy traces are near copies of each other
                "student": {"init": "pretrained", "model_name_or_path": tiny_model},
                "train": {
                    "max_steps": 150,
                    "save_steps": 5,
                    "per_device_train_batch_size": 1,
                    "logging_steps": 5,
                    "preflight_probe": False,
                    "max_length": 256,
                },
            }
        )
    )
    cfg = load_config(path)
    generate(cfg)
    filter_traces(cfg)
    ckpts = stage_dir(cfg, "train") / "checkpoints"
    kill_when(start_cli("train", path), lambda: (ckpts / "checkpoint-10" / "trainer_state.json").is_file(), timeout_s=180)
    # whole checkpoints only: the kill may land while a later one is being written (trainer_state.json comes last)
    saved = sorted(int(p.name.split("-")[1]) for p in ckpts.glob("checkpoint-*") if (p / "trainer_state.json").is_file())
    assert saved and max(saved) < 150
    done = subprocess.run(
        [sys.executable, "-m", "llmdistill.cli", "train", str(path), "--set", "train.logging_steps=2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    stats = json.loads((stage_dir(cfg, "train") / "stats.json").read_text())
    assert stats["steps"] == 150 and stats["sft"]["resumed_from"].endswith(f"checkpoint-{max(saved)}")
    logged = [h["step"] for h in stats["sft"]["log_history"] if "loss" in h]
    assert any(s % 5 for s in logged if s > max(saved))  # the new cadence took effect after the resume


def test_a_checkpoint_cut_off_while_saving_is_skipped_on_resume(tmp_path):
    """SIGKILL while Trainer saves leaves checkpoint-N without trainer_state.json (written last):
    resume takes the newest whole one instead of failing on the torn one."""
    from llmdistill.stages.train.checkpoints import last_checkpoint

    for step, whole in ((5, True), (10, True), (15, False)):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"x")
        if whole:
            (d / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    assert last_checkpoint(tmp_path / "checkpoint-5") is None
