"""Training objectives, mechanics (preflight, validation, resume, LoRA, packing) and logit
distillation on tiny local models."""

import json

import pytest
import torch
from safetensors.torch import load_file

from llmdistill.config.file import load_config
from llmdistill.errors import UserError
from llmdistill.filter import filter_traces
from llmdistill.generate import generate
from llmdistill.jsonl import read_rows
from llmdistill.records import TrainExample
from llmdistill.train import train
from llmdistill.train.trainers import make_trainer

from tests.conftest import correct_script, save_tiny_llama

PROMPT = "<|im_start|>user\nQ: Sam has {} apples.<|im_end|>\n<|im_start|>assistant\n"


def _pipeline(make_config, scripted, **sections):
    scripted.SCRIPT = correct_script()
    cfg = load_config(make_config(**sections))
    generate(cfg)
    filter_traces(cfg)
    return cfg


def _changed(cfg) -> bool:
    before = load_file(cfg.stage_dir("train") / "init" / "model.safetensors")
    after = load_file(cfg.stage_dir("train") / "model" / "model.safetensors")
    return before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("mode,source,n_examples", [("label", "teacher", 6), ("label", "gold", 6), ("step_by_step", "teacher", 12), ("step_by_step", "gold", 12)])
def test_each_mode_trains_two_steps_and_changes_the_weights(make_config, scripted, mode, source, n_examples):
    cfg = _pipeline(make_config, scripted, train={"mode": mode, "label_source": source})
    stats = train(cfg)
    assert stats["steps"] == 2 and stats["examples"] == n_examples
    assert _changed(cfg)
    examples = read_rows(cfg.stage_dir("train") / "examples.jsonl", TrainExample)
    label = next(e for e in examples if e.task == "label")
    assert label.completion == "The answer is 2." and "[label]" in label.prompt
    if mode == "step_by_step":
        rationale = next(e for e in examples if e.task == "rationale")
        assert rationale.completion == "Sam has 0 + 2 = 2 apples." and "[rationale]" in rationale.prompt
        logs = [h for h in stats["sft"]["log_history"] if "label_loss" in h]
        assert logs and all(h["label_loss"] > 0 and h["rationale_loss"] > 0 for h in logs)


def test_gold_labels_are_written_as_numbers(make_config, scripted, tmp_path):
    from llmdistill.records import Problem
    from llmdistill.train.examples import gold_output

    cfg = load_config(make_config())
    assert gold_output(Problem(id="x", question="q", answer="( 10.0 * 45.0 )"), cfg) == "450"
    assert gold_output(Problem(id="x", question="q", answer="2.50"), cfg) == "2.5"
    written = load_config(make_config(), ["train.gold_label=as_written"])
    assert gold_output(Problem(id="x", question="q", answer="( 10.0 - ( 6.0 + 3.5 ) )"), written) == "(10 - (6 + 3.5))"
    assert gold_output(Problem(id="x", question="q", answer="2.50"), written) == "2.50"
    assert cfg.stage_hash("train") != written.stage_hash("train")


def test_step_by_step_loss_equals_the_hand_computed_weighted_mean(make_config, scripted, tiny_model, tmp_path):
    cfg = load_config(make_config(train={"mode": "step_by_step", "alpha": 0.3}))
    examples = [
        TrainExample(id="a", task="label", prompt=PROMPT.format(3), completion="The answer is 3."),
        TrainExample(id="a", task="rationale", prompt=PROMPT.format(3), completion="Sam has 3 apples and eats none of them, so still 3 apples."),
        TrainExample(id="b", task="label", prompt=PROMPT.format(5), completion="The answer is 5."),
        TrainExample(id="b", task="rationale", prompt=PROMPT.format(5), completion="He has 5 apples."),
    ]
    trainer = make_trainer(cfg, tiny_model, examples, str(tmp_path / "ckpt"))
    ds = trainer.train_dataset
    batch = trainer.data_collator([{k: ds[i][k] for k in ("input_ids", "labels", "task", "group")} for i in range(4)])
    assert batch["task"].tolist() == [0, 1, 0, 1]
    model = trainer.model.eval()
    with torch.no_grad():
        got = trainer.compute_loss(model, dict(batch)).item()
        per_example = []
        for i in range(4):  # each example alone, through the model's own loss: mean over its completion tokens
            ids = torch.tensor([ds[i]["input_ids"]])
            labels = torch.tensor([ds[i]["labels"]])
            per_example.append(model(input_ids=ids, labels=labels).loss.item())
    want = 0.3 * (per_example[0] + per_example[2]) / 2 + 0.7 * (per_example[1] + per_example[3]) / 2
    assert got == pytest.approx(want, rel=1e-4)
    # and not the token-mean TRL would take (rationales are longer, so the two differ)
    n_tok = [sum(x != -100 for x in ds[i]["labels"]) for i in range(4)]
    token_mean = sum(l * n for l, n in zip(per_example, n_tok)) / sum(n_tok)
    assert abs(got - token_mean) > 1e-3


def test_step_by_step_prompt_tokens_are_outside_the_loss(make_config, scripted, tiny_model, tmp_path):
    cfg = load_config(make_config(train={"mode": "step_by_step"}))
    ex = [TrainExample(id="a", task="label", prompt=PROMPT.format(3), completion="The answer is 3."),
          TrainExample(id="a", task="rationale", prompt=PROMPT.format(3), completion="3 apples.")]
    trainer = make_trainer(cfg, tiny_model, ex, str(tmp_path / "ckpt"))
    tok = trainer.processing_class
    for row, e in zip(trainer.train_dataset, ex):
        target = [t for t in row["labels"] if t != -100]
        assert tok.decode(target) == e.completion + tok.eos_token
        n_prompt = len(tok(e.prompt, add_special_tokens=False)["input_ids"])
        assert all(t == -100 for t in row["labels"][:n_prompt])


def test_group_sampler_keeps_a_traces_tasks_together():
    from llmdistill.train.trainers import GroupSampler

    sampler = GroupSampler([0, 0, 1, 1, 2, 3, 3], seed=1)
    order = list(sampler)
    assert sorted(order) == list(range(7))
    pos = {i: order.index(i) for i in order}
    assert abs(pos[0] - pos[1]) == 1 and abs(pos[2] - pos[3]) == 1 and abs(pos[5] - pos[6]) == 1
    assert list(sampler) != order or list(sampler) != order  # reshuffled per epoch


def test_preflight_refuses_a_config_that_truncates_answers(make_config, scripted):
    cfg = _pipeline(make_config, scripted, train={"max_length": 40})
    with pytest.raises(UserError, match=r"preflight: 6 of 6 training examples are longer than train.max_length=40"):
        train(cfg)
    assert not (cfg.stage_dir("train") / "model").exists()


def test_preflight_drop_counts_what_it_dropped(make_config, scripted, tmp_path):
    from llmdistill.backends.hf import load_tokenizer
    from llmdistill.records import FilteredTrace
    from llmdistill.train.examples import build_examples, preflight

    cfg = _pipeline(make_config, scripted, train={"on_overlength": "drop"})
    traces = read_rows(cfg.stage_dir("filter") / "kept.jsonl", FilteredTrace)
    tok = load_tokenizer(cfg.teacher.model_name_or_path)
    examples = build_examples(cfg, traces, tok)
    _, report = preflight(cfg, examples, tok)
    lo, hi = report["total_tokens"]["min"], report["total_tokens"]["max"]
    assert lo < hi and report["over_max_length"] == 0
    cfg.train.max_length = lo  # the shortest examples fit, the others would lose their answers
    kept, report = preflight(cfg, examples, tok)
    assert 0 < len(kept) < len(examples)
    assert report["over_max_length"] == len(examples) - len(kept) == len(report["dropped_over_max_length"])
    assert report["prompt_tokens"]["max"] > 0 and report["train_tokens_per_epoch"] > 0


def test_validation_split_is_held_out_and_selects_a_checkpoint(make_config, scripted):
    cfg = _pipeline(make_config, scripted, train={"validation_fraction": 0.34, "eval_steps": 1, "max_steps": 2})
    stats = train(cfg)
    examples = read_rows(cfg.stage_dir("train") / "examples.jsonl", TrainExample)
    val = {e.id for e in examples if e.split == "validation"}
    assert val and val.isdisjoint({e.id for e in examples if e.split == "train"})
    assert stats["best_eval_loss"] is not None and stats["sft"]["best_checkpoint"]
    assert all(not e.id.startswith("te") for e in examples)  # never the test split


def test_resume_continues_from_the_saved_step(make_config, scripted, monkeypatch):
    from transformers import TrainerCallback

    import llmdistill.train.sft as train_mod

    cfg = _pipeline(make_config, scripted, train={"max_steps": 4, "save_steps": 2, "per_device_train_batch_size": 1})

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


def test_changed_config_does_not_resume_stale_checkpoints(make_config, scripted):
    cfg = _pipeline(make_config, scripted, train={"max_steps": 2, "save_steps": 1})
    train(cfg)
    cfg2 = load_config(make_config(train={"max_steps": 2, "save_steps": 1, "learning_rate": 1e-3}))
    stats = train(cfg2)
    assert stats["sft"]["resumed_from"] is None


def test_lora_trains_and_saves_a_merged_plain_model(make_config, scripted):
    cfg = _pipeline(make_config, scripted, train={"lora": {"r": 4, "alpha": 8}, "learning_rate": 1e-2})
    stats = train(cfg)
    assert stats["steps"] == 2
    model_dir = cfg.stage_dir("train") / "model"
    assert not (model_dir / "adapter_config.json").exists()
    assert _changed(cfg)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(model_dir)


def test_packing_keeps_each_examples_loss(make_config, scripted, tiny_model, tmp_path):
    """Packed rows give every example the same loss as when it is alone in its row."""
    examples = [TrainExample(id=str(i), prompt=PROMPT.format(i), completion=f"Sam has {i} apples. The answer is {i}.") for i in range(5)]
    sums = {}
    for packing in (False, True):
        cfg = load_config(make_config(train={"packing": packing, "max_length": 256, "per_device_train_batch_size": 5}))
        trainer = make_trainer(cfg, tiny_model, examples, str(tmp_path / f"ckpt{packing}"))
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        n_rows = batch["input_ids"].shape[0]
        with torch.no_grad():
            out = trainer.model.eval()(**batch, fused_lm_head=True)
        sums[packing] = (-out.log_probs.sum().item(), int(out.label_mask.sum()), n_rows)
    (loss_a, tokens_a, rows_a), (loss_b, tokens_b, rows_b) = sums[False], sums[True]
    assert rows_b < rows_a and tokens_a == tokens_b
    assert loss_a == pytest.approx(loss_b, rel=1e-4)


def test_model_card_describes_the_student(make_config, scripted):
    cfg = _pipeline(make_config, scripted, train={"mode": "step_by_step"})
    train(cfg)
    card = (cfg.stage_dir("train") / "model" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers")
    assert "mode-step_by_step" in card and "## Training data" in card and "train_loss" in card and "alpha: 0.5" in card


def test_step_by_step_student_is_evaluated_on_the_label_prompt(make_config, scripted):
    from llmdistill.evaluate import evaluate

    cfg = _pipeline(make_config, scripted, train={"mode": "step_by_step", "num_shots": 0}, evaluate={"models": ["student"]})
    train(cfg)
    evaluate(cfg)
    report = json.loads((cfg.stage_dir("evaluate") / "report.json").read_text())
    assert report["models"]["student"]["prompt"] == "label, 0 shots"
    card = (cfg.stage_dir("train") / "model" / "README.md").read_text()
    assert "## Evaluation" in card and "student (after training)" in card


# ---- logit distillation ----------------------------------------------------------------------

def test_on_policy_kd_runs_two_steps(make_config, scripted):
    cfg = _pipeline(make_config, scripted, kd={"method": "on_policy", "max_steps": 2, "max_new_tokens": 8, "per_device_train_batch_size": 2})
    stats = train(cfg)
    assert stats["sft"]["steps"] == 2 and stats["kd"]["steps"] == 2
    after_sft = load_file(cfg.stage_dir("train") / "sft_model" / "model.safetensors")
    final = load_file(cfg.stage_dir("train") / "model" / "model.safetensors")
    assert any(not torch.equal(after_sft[k], final[k]) for k in final)


def test_on_policy_kd_refuses_a_vocabulary_mismatch(make_config, scripted, tmp_path):
    from tests.conftest import build_tokenizer

    other = tmp_path / "other-student"
    save_tiny_llama(other, hidden=16, layers=2, heads=2, kv_heads=1)
    tok = build_tokenizer(vocab_size=300)
    tok.save_pretrained(other)
    cfg = _pipeline(make_config, scripted, student={"init": "pretrained", "model_name_or_path": str(other)},
                    kd={"method": "on_policy", "after_sft": False, "max_steps": 2})
    with pytest.raises(UserError, match="one shared vocabulary"):
        train(cfg)


class LogprobBackend:
    """The scripted teacher, returning the generated token ids and a fake top-3 distribution."""

    def __new__(cls, *a, **kw):
        from tests.conftest import ScriptedBackend

        backend = ScriptedBackend(*a, **kw)
        base = backend.generate

        def generate(requests, params):
            out = base(requests, params)
            for completions in out:
                for c in completions:
                    ids = backend.tokenizer(c.text, add_special_tokens=False)["input_ids"] + [backend.tokenizer.eos_token_id]
                    c.token_ids = ids
                    c.top_logprobs = [[[t, -0.4], [(t + 1) % 300, -1.6], [(t + 7) % 300, -2.5]] for t in ids]
            return out

        backend.generate = generate
        return backend


def test_offline_topk_kd_trains_on_the_teachers_tokens(make_config, scripted, monkeypatch):
    from llmdistill.backends import BACKENDS

    monkeypatch.setitem(BACKENDS, "logprob", "tests.test_train_modes:LogprobBackend")
    cfg = _pipeline(make_config, scripted, teacher={"backend": "logprob"}, generate={"logprobs": 3}, kd={"method": "offline_topk", "lam": 0.5})
    stats = train(cfg)
    assert stats["steps"] == 2 and _changed(cfg)
    logs = [h for h in stats["sft"]["log_history"] if "topk_kl" in h]
    assert logs and all(h["topk_kl"] > 0 and h["ce_loss"] > 0 for h in logs)
    assert stats["sft"]["preflight"]["offline_topk"]["k"] == 3


def test_offline_topk_needs_logprobs_and_cot(make_config, scripted):
    with pytest.raises(UserError, match="generate.logprobs"):
        load_config(make_config(kd={"method": "offline_topk"}))
    with pytest.raises(UserError, match="train.mode 'cot'"):
        load_config(make_config(kd={"method": "offline_topk"}, generate={"logprobs": 5}, train={"mode": "label"}))


def test_pruned_student_is_rebuilt_when_its_recipe_changes(make_config, scripted):
    from transformers import AutoConfig

    from llmdistill.student import materialize_student

    cfg = load_config(make_config(student={"keep_layers": "every_other"}))
    assert AutoConfig.from_pretrained(materialize_student(cfg)).num_hidden_layers == 2
    cfg = load_config(make_config(student={"keep_layers": [0, 1, 2]}))
    assert AutoConfig.from_pretrained(materialize_student(cfg)).num_hidden_layers == 3


def test_data_fraction_takes_nested_subsets_of_problems(make_config, scripted):
    from llmdistill.backends.hf import load_tokenizer
    from llmdistill.data import load_problems
    from llmdistill.records import FilteredTrace
    from llmdistill.train.examples import build_examples, in_subset

    ids = [f"p{i}" for i in range(2000)]
    quarter, half = {i for i in ids if in_subset(i, 0.25)}, {i for i in ids if in_subset(i, 0.5)}
    assert quarter < half and abs(len(quarter) - 500) < 60 and abs(len(half) - 1000) < 80
    cfg = _pipeline(make_config, scripted, train={"mode": "label", "label_source": "gold", "data_fraction": 0.5})
    tok = load_tokenizer(cfg.teacher.model_name_or_path)
    traces = read_rows(cfg.stage_dir("filter") / "kept.jsonl", FilteredTrace)
    examples = build_examples(cfg, traces, tok, load_problems(cfg.data, "train"))
    assert {e.id for e in examples} == {p.id for p in load_problems(cfg.data, "train") if in_subset(p.id, 0.5)}


def test_group_sampler_order_follows_the_epoch_for_resume():
    from llmdistill.train.trainers import ExtraFieldsCollator, GroupSampler

    a, b = GroupSampler(list(range(20)), seed=0), GroupSampler(list(range(20)), seed=0)
    list(a)  # epoch 0 consumed in one process...
    b.set_epoch(1)  # ...a resumed process is told the epoch
    assert list(a) == list(b)
    # top-k rows of different widths in one batch are padded to the widest
    base = lambda ex: {"input_ids": torch.tensor([e["input_ids"] for e in ex])}  # noqa: E731
    batch = ExtraFieldsCollator(base, sequences={"teacher_ids": -1})([{"input_ids": [1, 2], "teacher_ids": [[3], [4]]},
                                                                      {"input_ids": [5, 6], "teacher_ids": [[7, 8], [9, 10]]}])
    assert batch["teacher_ids"].tolist() == [[[3, -1], [4, -1]], [[7, 8], [9, 10]]]
