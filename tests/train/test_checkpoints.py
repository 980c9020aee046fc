"""Checkpoints, resume, validation-based selection, LoRA merging, the saved student and its card."""



import pytest

from llmdistill.config.file import load_config
from llmdistill.errors import UserError
from llmdistill.jsonl import read_rows
from llmdistill.records import TrainExample
from llmdistill.train import train

from tests.conftest import run_to_filter, weights_changed




def test_validation_split_is_held_out_and_selects_a_checkpoint(make_config, scripted):
    cfg = run_to_filter(make_config, scripted, train={"validation_fraction": 0.34, "eval_steps": 1, "max_steps": 2})
    stats = train(cfg)
    examples = read_rows(cfg.stage_dir("train") / "examples.jsonl", TrainExample)
    val = {e.id for e in examples if e.split == "validation"}
    assert val and val.isdisjoint({e.id for e in examples if e.split == "train"})
    assert stats["best_eval_loss"] is not None and stats["sft"]["best_checkpoint"]
    assert all(not e.id.startswith("te") for e in examples)  # never the test split


def test_resume_continues_from_the_saved_step(make_config, scripted, monkeypatch):
    from transformers import TrainerCallback

    import llmdistill.train.sft as train_mod

    cfg = run_to_filter(make_config, scripted, train={"max_steps": 4, "save_steps": 2, "per_device_train_batch_size": 1})

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise RuntimeError("simulated crash")

    real = train_mod.make_trainer

    def crashing(*a, **kw):
        t = real(*a, **kw)
        t.add_callback(Crash())
        return t

    monkeypatch.setattr(train_mod, "make_trainer", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg)
    assert (cfg.stage_dir("train") / "checkpoints" / "checkpoint-2").is_dir()
    monkeypatch.setattr(train_mod, "make_trainer", real)
    stats = train(cfg)
    assert stats["sft"]["resumed_from"].endswith("checkpoint-2")
    assert stats["steps"] == 4
    trained_steps = [h["step"] for h in stats["sft"]["log_history"] if "loss" in h]
    assert trained_steps[-1] == 4 and 3 in trained_steps


def test_changed_content_never_resumes_stale_checkpoints_and_never_deletes_them(make_config, scripted):
    cfg = run_to_filter(make_config, scripted, train={"max_steps": 2, "save_steps": 1})
    train(cfg)
    cfg2 = load_config(make_config(train={"max_steps": 2, "save_steps": 1, "learning_rate": 1e-3}))
    with pytest.raises(UserError, match="train.learning_rate"):
        train(cfg2)
    stats = train(cfg2, overwrite=True)
    assert stats["sft"]["resumed_from"] is None
    [aside] = cfg.stage_dir("train").parent.glob("train.replaced-*")
    assert (aside / "checkpoints" / "checkpoint-2").is_dir() and (aside / "model" / "model.safetensors").is_file()


def test_lora_trains_and_saves_a_merged_plain_model(make_config, scripted):
    cfg = run_to_filter(make_config, scripted, train={"lora": {"r": 4, "alpha": 8}, "learning_rate": 1e-2})
    stats = train(cfg)
    assert stats["steps"] == 2
    model_dir = cfg.stage_dir("train") / "model"
    assert not (model_dir / "adapter_config.json").exists()
    assert weights_changed(cfg)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(model_dir)


def test_model_card_describes_the_student(make_config, scripted):
    cfg = run_to_filter(make_config, scripted, train={"mode": "step_by_step"})
    train(cfg)
    card = (cfg.stage_dir("train") / "model" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers")
    assert "mode-step_by_step" in card and "## Training data" in card and "train_loss" in card and "alpha: 0.5" in card


def test_pruned_student_is_rebuilt_when_its_recipe_changes(make_config, scripted):
    from transformers import AutoConfig

    from llmdistill.student import materialize_student

    cfg = load_config(make_config(student={"keep_layers": "every_other"}))
    assert AutoConfig.from_pretrained(materialize_student(cfg)).num_hidden_layers == 2
    cfg = load_config(make_config(student={"keep_layers": [0, 1, 2]}))
    assert AutoConfig.from_pretrained(materialize_student(cfg)).num_hidden_layers == 3
