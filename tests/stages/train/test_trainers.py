"""The objectives' trainers on a tiny local model: each mode trains, the step-by-step loss equals a
hand-computed reference, prompts stay outside the loss, grouping and packing behave."""

import json

import pytest
import torch

from llmdistill.config.file import load_config
from llmdistill.jsonl import read_rows
from llmdistill.outputs import stage_dir
from llmdistill.records import TrainExample
from llmdistill.stages.train import train
from llmdistill.stages.train.trainers import make_trainer
from tests.conftest import run_to_filter, weights_changed

PROMPT = "<|im_start|>user\nQ: Sam has {} apples.<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize(
    "mode,source,n_examples", [("label", "teacher", 6), ("label", "gold", 6), ("step_by_step", "teacher", 12), ("step_by_step", "gold", 12)]
)
def test_each_mode_trains_two_steps_and_changes_the_weights(make_config, scripted, mode, source, n_examples):
    cfg = run_to_filter(make_config, scripted, train={"mode": mode, "label_source": source})
    stats = train(cfg)
    assert stats["steps"] == 2 and stats["examples"] == n_examples
    assert weights_changed(cfg)
    examples = read_rows(stage_dir(cfg, "train") / "examples.jsonl", TrainExample)
    label = next(e for e in examples if e.task == "label")
    assert label.completion == "The answer is 2." and "[label]" in label.prompt
    if mode == "step_by_step":
        rationale = next(e for e in examples if e.task == "rationale")
        assert rationale.completion == "Sam has 0 + 2 = 2 apples." and "[rationale]" in rationale.prompt
        logs = [h for h in stats["sft"]["log_history"] if "label_loss" in h]
        assert logs and all(h["label_loss"] > 0 and h["rationale_loss"] > 0 for h in logs)


def test_step_by_step_loss_equals_the_hand_computed_weighted_mean(make_config, scripted, tiny_model, tmp_path):
    cfg = load_config(make_config(train={"mode": "step_by_step", "alpha": 0.3}))
    examples = [
        TrainExample(id="a", task="label", prompt=PROMPT.format(3), completion="The answer is 3."),
        TrainExample(
            id="a", task="rationale", prompt=PROMPT.format(3), completion="Sam has 3 apples and eats none of them, so still 3 apples."
        ),
        TrainExample(id="b", task="label", prompt=PROMPT.format(5), completion="The answer is 5."),
        TrainExample(id="b", task="rationale", prompt=PROMPT.format(5), completion="He has 5 apples."),
    ]
    trainer = make_trainer(cfg, tiny_model, examples, str(tmp_path / "ckpt"))
    ds = trainer.train_dataset
    batch = trainer.data_collator([{k: ds[i][k] for k in ("input_ids", "labels", "task", "group")} for i in range(4)])
    assert batch["task"].tolist() == [0, 1, 0, 1]
    model = trainer.model.eval()
    with torch.no_grad():
        got = trainer.compute_loss(model, {k: v.to(model.device) for k, v in batch.items()}).item()
        per_example = []
        for i in range(4):  # each example alone, through the model's own loss: mean over its completion tokens
            ids = torch.tensor([ds[i]["input_ids"]], device=model.device)
            labels = torch.tensor([ds[i]["labels"]], device=model.device)
            per_example.append(model(input_ids=ids, labels=labels).loss.item())
    want = 0.3 * (per_example[0] + per_example[2]) / 2 + 0.7 * (per_example[1] + per_example[3]) / 2
    assert got == pytest.approx(want, rel=1e-4)
    # and not the token-mean TRL would take (rationales are longer, so the two differ)
    n_tok = [sum(x != -100 for x in ds[i]["labels"]) for i in range(4)]
    token_mean = sum(loss * n for loss, n in zip(per_example, n_tok)) / sum(n_tok)
    assert abs(got - token_mean) > 1e-3


def test_step_by_step_prompt_tokens_are_outside_the_loss(make_config, scripted, tiny_model, tmp_path):
    cfg = load_config(make_config(train={"mode": "step_by_step"}))
    ex = [
        TrainExample(id="a", task="label", prompt=PROMPT.format(3), completion="The answer is 3."),
        TrainExample(id="a", task="rationale", prompt=PROMPT.format(3), completion="3 apples."),
    ]
    trainer = make_trainer(cfg, tiny_model, ex, str(tmp_path / "ckpt"))
    tok = trainer.processing_class
    for row, e in zip(trainer.train_dataset, ex):
        target = [t for t in row["labels"] if t != -100]
        assert tok.decode(target) == e.completion + tok.eos_token
        n_prompt = len(tok(e.prompt, add_special_tokens=False)["input_ids"])
        assert all(t == -100 for t in row["labels"][:n_prompt])


def test_group_sampler_keeps_a_traces_tasks_together():
    from llmdistill.stages.train.trainers import GroupSampler

    sampler = GroupSampler([0, 0, 1, 1, 2, 3, 3], seed=1)
    order = list(sampler)
    assert sorted(order) == list(range(7))
    pos = {i: order.index(i) for i in order}
    assert abs(pos[0] - pos[1]) == 1 and abs(pos[2] - pos[3]) == 1 and abs(pos[5] - pos[6]) == 1
    second = list(sampler)  # the next epoch: the same pairs, in another order
    assert sorted(second) == list(range(7)) and second != order


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


def test_group_sampler_order_follows_the_epoch_for_resume():
    from llmdistill.stages.train.trainers import ExtraFieldsCollator, GroupSampler

    a, b = GroupSampler(list(range(20)), seed=0), GroupSampler(list(range(20)), seed=0)
    list(a)  # epoch 0 consumed in one process...
    b.set_epoch(1)  # ...a resumed process is told the epoch
    assert list(a) == list(b)
    # top-k rows of different widths in one batch are padded to the widest
    base = lambda ex: {"input_ids": torch.tensor([e["input_ids"] for e in ex])}
    batch = ExtraFieldsCollator(base, sequences={"teacher_ids": -1})(
        [{"input_ids": [1, 2], "teacher_ids": [[3], [4]]}, {"input_ids": [5, 6], "teacher_ids": [[7, 8], [9, 10]]}]
    )
    assert batch["teacher_ids"].tolist() == [[[3, -1], [4, -1]], [[7, 8], [9, 10]]]


def test_problem_batches_hold_whole_pairs_and_the_counts_say_what_was_seen(make_config, scripted):
    """batch_unit: problems -- a batch of 2 problems is 2 label + 2 rationale examples, as in the paper."""
    cfg = run_to_filter(
        make_config, scripted, train={"mode": "step_by_step", "batch_unit": "problems", "per_device_train_batch_size": 2, "max_steps": 3}
    )
    stats = train(cfg)
    assert stats["seen"]["label_examples"] == 6 and stats["seen"]["rationale_examples"] == 6  # 3 steps x 2 problems, each task
    assert stats["seen"]["rationale_tokens"] > stats["seen"]["label_tokens"] > 0
    examples = read_rows(stage_dir(cfg, "train") / "examples.jsonl", TrainExample)
    trainer = make_trainer(cfg, cfg.teacher.model_name_or_path, examples, str(stage_dir(cfg, "train") / "probe"))
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["task"].tolist() == [0, 1, 0, 1] and batch["group"][0] == batch["group"][1] and batch["group"][2] == batch["group"][3]


def test_label_training_counts_its_examples(make_config, scripted):
    cfg = run_to_filter(make_config, scripted, train={"mode": "label", "per_device_train_batch_size": 2, "max_steps": 2})
    seen = train(cfg)["seen"]
    assert seen["label_examples"] == 4 and seen["label_tokens"] >= 4 * 5 and "rationale_examples" not in seen


def test_length_grouped_batches_keep_pairs_and_cut_padding():
    from llmdistill.stages.train.trainers import GroupSampler

    groups = [g for g in range(40) for _ in range(2)]
    lengths = [10 + 7 * ((g * 13) % 40) for g in groups]
    sampler = GroupSampler(groups, seed=0, lengths=lengths, groups_per_batch=4)
    order = list(sampler)
    assert sorted(order) == list(range(80)) and all(groups[order[i]] == groups[order[i + 1]] for i in range(0, 80, 2))

    def padding(idx):  # padded minus real tokens over batches of 8 examples
        return sum(8 * max(lengths[i] for i in idx[b : b + 8]) - sum(lengths[i] for i in idx[b : b + 8]) for b in range(0, 80, 8))

    assert padding(order) < padding(list(GroupSampler(groups, seed=0))) / 3


def test_checkpoints_can_be_selected_on_validation_accuracy(make_config, scripted):
    cfg = run_to_filter(
        make_config,
        scripted,
        train={
            "mode": "step_by_step",
            "validation_fraction": 0.34,
            "eval_steps": 1,
            "max_steps": 2,
            "select_on": "accuracy",
            "eval_max_new_tokens": 6,
        },
    )
    stats = train(cfg)
    accuracies = [h["eval_accuracy"] for h in stats["sft"]["log_history"] if "eval_accuracy" in h]
    assert len(accuracies) == 2 and all(0 <= a <= 1 for a in accuracies)
    assert stats["best_eval_accuracy"] == round(max(accuracies), 4) and stats["sft"]["best_checkpoint"]


def test_answer_first_loss_weighs_answer_and_rationale_tokens_apart(make_config, scripted, tiny_model, tmp_path):
    """layout answer_first: one sequence per problem; alpha * mean(answer token losses) + (1 - alpha) * mean(rationale ones)."""
    from llmdistill.backends.transformers import load_tokenizer
    from llmdistill.stages.train.examples import tokenize_answer_first

    cfg = load_config(make_config(train={"mode": "step_by_step", "layout": "answer_first", "alpha": 0.3}))
    examples = [
        TrainExample(id="a", task="answer_rationale", prompt=PROMPT.format(3), completion="The answer is 3.\n\nSam keeps all 3 apples."),
        TrainExample(id="b", task="answer_rationale", prompt=PROMPT.format(5), completion="The answer is 5.\n\nHe has 5."),
    ]
    tok = load_tokenizer(tiny_model)
    trainer = make_trainer(cfg, tiny_model, examples, str(tmp_path / "ckpt"), tokenize_answer_first(examples, tok))
    ds = trainer.train_dataset
    batch = trainer.data_collator([{k: ds[i][k] for k in ("input_ids", "labels", "answer_len")} for i in range(2)])
    model = trainer.model.eval()
    with torch.no_grad():
        got = trainer.compute_loss(model, {k: v.to(model.device) for k, v in batch.items()}).item()
        answer, rationale = [], []
        for i in range(2):
            ids, labels, n = ds[i]["input_ids"], ds[i]["labels"], ds[i]["answer_len"]
            logp = model(input_ids=torch.tensor([ids], device=model.device)).logits[0].log_softmax(-1)
            target = [(t, labels[t]) for t in range(1, len(ids)) if labels[t] != -100]  # completion tokens, in order
            nll = [-logp[t - 1, tok].item() for t, tok in target]
            answer.append(sum(nll[:n]) / n)
            rationale.append(sum(nll[n:]) / len(nll[n:]))
    assert tok.decode([t for t in ds[0]["labels"] if t != -100][: ds[0]["answer_len"]]) == "The answer is 3."
    assert got == pytest.approx(0.3 * sum(answer) / 2 + 0.7 * sum(rationale) / 2, rel=1e-4)


def test_an_answer_first_student_trains_and_stops_after_its_answer(make_config, scripted):
    from llmdistill.stages.evaluate.run import evaluate

    cfg = run_to_filter(
        make_config,
        scripted,
        train={"mode": "step_by_step", "layout": "answer_first"},
        evaluate={"models": ["student"], "max_new_tokens": 12},
    )
    stats = train(cfg)
    examples = read_rows(stage_dir(cfg, "train") / "examples.jsonl", TrainExample)
    assert stats["steps"] == 2 and {e.task for e in examples} == {"answer_rationale"} and len(examples) == 6
    assert examples[0].completion == "The answer is 2.\n\nSam has 0 + 2 = 2 apples."
    seen = stats["seen"]  # 2 steps x 2 problems, one sequence each: its answer tokens count as label tokens, the rest as rationale
    assert seen["label_examples"] == seen["rationale_examples"] == 4 and 4 * 5 <= seen["label_tokens"] < seen["rationale_tokens"]
    evaluate(cfg)
    outputs = [json.loads(line)["output"] for line in (stage_dir(cfg, "evaluate") / "results.jsonl").read_text().splitlines()]
    assert outputs and all("\n\n" not in o for o in outputs)


def _reference_order(groups, seed, lengths, groups_per_batch, epoch):
    """The sampler's order written with Python lists, as it was before it held numpy arrays."""
    import random

    members: dict = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    members = list(members.values())
    order = list(range(len(members)))
    random.Random(seed + epoch).shuffle(order)
    if lengths is not None:
        group_len = [max(lengths[i] for i in m) for m in members]
        mega = 50 * groups_per_batch
        chunks = [order[i : i + mega] for i in range(0, len(order), mega)]
        order = [g for chunk in chunks for g in sorted(chunk, key=lambda g: -group_len[g])]
    return [i for g in order for i in members[g]]


def test_group_sampler_order_equals_the_list_reference():
    """Groups in any order (a key seen again later joins its group), with and without lengths: the
    order of every epoch, exactly, so runs and resumes keep their batches."""
    import random

    from llmdistill.stages.train.trainers import GroupSampler

    rng = random.Random(3)
    for trial in range(60):
        n = rng.randint(0, 400)
        groups = [rng.randint(0, max(1, n // 2)) for _ in range(n)]
        lengths = [rng.randint(1, 30) for _ in range(n)] if trial % 2 else None
        per_batch, seed = rng.randint(1, 4), rng.randint(0, 9)
        sampler = GroupSampler(groups, seed, lengths, per_batch)
        for epoch in range(2):
            assert list(sampler) == _reference_order(groups, seed, lengths, per_batch, epoch)
