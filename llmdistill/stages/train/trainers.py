"""TRL ``SFTTrainer`` subclasses for the objectives plain SFT cannot express.

- ``StepByStepTrainer``: batches carry each example's task; the loss is
  ``alpha * mean(label example losses) + (1 - alpha) * mean(rationale example losses)``, and a
  sampler keeps the label and rationale examples of one trace in the same batch.
- ``TopKDistillTrainer``: pre-tokenized teacher tokens with the teacher's top-k logprobs at each
  completion position; the loss is ``(1 - lam) * CE + lam * KL(teacher top-k || student)``.

Both compute a per-micro-batch mean and leave gradient accumulation to ``Trainer`` (which divides
by the accumulation steps when ``model_accepts_loss_kwargs`` is off).
"""

from __future__ import annotations

import random
from array import array
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler
from transformers import TrainerCallback

from llmdistill.config import Config
from llmdistill.records import TrainExample
from llmdistill.stages.train.args import lora_config, sft_config, trl_class
from llmdistill.stages.train.losses import answer_first_loss, per_example_mean, step_by_step_loss, topk_kl
from llmdistill.stages.train.monitor import Monitored, ValidationSet
from llmdistill.stages.train.sets import ExampleSets, SftRows, column, first_appearance

SFTTrainer: Any = trl_class("SFTTrainer")  # imported at run time: a base class mypy cannot see


class CurrentCadence(TrainerCallback):
    """On resume, transformers restores logging/eval/save steps from the checkpoint's state: put
    back the current run's (they are operational settings, free to change between runs)."""

    def on_train_begin(self, args, state, control, **kwargs):
        state.compute_steps(args, state.max_steps)


class GroupSampler(Sampler):
    """Shuffles groups (the examples of one trace), keeping each group's examples consecutive.

    With complete (label, rationale) pairs and a batch of whole pairs every batch holds whole
    problems; a trace with one example (no rationale, or one dropped by the preflight) shifts the
    pairs after it. With ``lengths`` and ``groups_per_batch``, groups of similar length are batched
    together (as HF's length-grouped sampler does: shuffled, then sorted by length within
    mega-batches of 50 batches), which cuts padding. The order depends on the seed and the epoch
    (``set_epoch``), so a resumed run replays the same order. Held in numpy: a few 8-byte numbers
    a group; groups that are not runs of consecutive examples numbered in order (the train stage's
    are) add an 8-byte index an example.
    """

    def __init__(self, groups, seed: int, lengths=None, groups_per_batch: int = 1):
        groups = np.asarray(groups, dtype=np.int64)
        self.n, self.seed, self.epoch = len(groups), seed, 0
        self.members: np.ndarray | None = None  # each group's examples, group after group; None: 0, 1, 2... (runs)
        step = np.diff(groups)
        if self.n and groups[0] == 0 and bool(((step == 0) | (step == 1)).all()):  # runs numbered 0, 1, 2...
            self.start = np.concatenate(([0], np.flatnonzero(step) + 1))
            self.size = np.diff(self.start, append=self.n)
        else:  # groups in order of first appearance; each group's examples in their order
            group_of = first_appearance(groups)
            self.members = np.argsort(group_of, kind="stable")
            self.size = np.bincount(group_of)
            self.start = np.cumsum(self.size) - self.size
        del groups, step
        self.group_len = None
        if lengths is not None and self.n:
            lengths = np.asarray(lengths)
            self.group_len = np.maximum.reduceat(lengths if self.members is None else lengths[self.members], self.start)
        self.mega = 50 * groups_per_batch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        rng = random.Random(self.seed + self.epoch)
        self.epoch += 1
        shuffled = array("q", range(len(self.size)))
        rng.shuffle(shuffled)  # random.shuffle over a list of the same numbers: the same order
        order = np.frombuffer(shuffled, dtype=np.int64)
        if self.group_len is not None:  # longest first within each mega-batch; ties keep the shuffled order
            order = order[np.lexsort((-self.group_len[order], np.arange(len(order)) // self.mega))]
        if self.members is None:  # runs: each group's examples are a range, yielded as the batches are drawn
            return self._ranges(order)
        size = self.size[order]
        ends = np.cumsum(size)
        at = np.repeat(self.start[order] - (ends - size), size) + np.arange(self.n)  # each group's members, in turn
        return map(int, self.members[at])

    def _ranges(self, order: np.ndarray):
        for lo in range(0, len(order), 65536):
            part = order[lo : lo + 65536]
            for start, size in zip(self.start[part].tolist(), self.size[part].tolist()):
                yield from range(start, start + size)

    def __len__(self) -> int:
        return self.n


class ExtraFieldsCollator:
    """Wraps TRL's collator: pops per-example fields it does not know and adds them back as tensors."""

    def __init__(self, base, scalars: tuple[str, ...] = (), sequences: dict[str, float] | None = None):
        self.base, self.scalars, self.sequences = base, scalars, sequences or {}

    def __call__(self, examples: list[dict]) -> dict:
        extra = {k: [e.pop(k) for e in examples] for k in (*self.scalars, *self.sequences) if k in examples[0]}
        batch = self.base(examples)
        for k in self.scalars:
            if k in extra:
                batch[k] = torch.tensor(extra[k])
        length = batch["input_ids"].shape[1]
        for k, pad in self.sequences.items():
            if k in extra:
                rows = [torch.tensor(v, dtype=torch.float32 if isinstance(pad, float) else torch.long) for v in extra[k]]
                width = max(r.shape[-1] for r in rows)
                out = torch.full((len(rows), length, width), pad, dtype=rows[0].dtype)
                for i, r in enumerate(rows):
                    out[i, : r.shape[0], : r.shape[-1]] = r[:length]
                batch[k] = out
        return batch


class _ArrowLengths:
    """HF's length-grouped sampler, its lengths read from the Arrow offsets of ``input_ids``
    (``column``) rather than by reading every row in Python."""

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        args = self.args
        if args.train_sampling_strategy != "group_by_length" or "input_ids" not in getattr(dataset, "column_names", ()):
            return super()._get_train_sampler(train_dataset)
        import pyarrow.compute as pc
        from transformers.trainer_pt_utils import LengthGroupedSampler

        lengths = column(dataset, "input_ids", pc.list_value_length).tolist()
        return LengthGroupedSampler(args.train_batch_size * args.gradient_accumulation_steps, dataset=dataset, lengths=lengths)


class MonitoredSFTTrainer(_ArrowLengths, Monitored, SFTTrainer):
    """TRL's SFTTrainer, counting what it trains on, with validation accuracy when asked."""


class _CustomLossTrainer(_ArrowLengths, Monitored, SFTTrainer):
    EXTRA_COLUMNS: tuple[str, ...] = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False  # our loss is a per-micro-batch mean: let Trainer scale for accumulation
        self.data_collator = self._wrap_collator(self.data_collator)

    def _wrap_collator(self, base):
        return base

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns = list(dict.fromkeys([*self._signature_columns, *self.EXTRA_COLUMNS]))

    def _record(self, name: str, value: torch.Tensor | None) -> None:
        if value is not None:
            mode = "train" if self.model.training else "eval"
            self._metrics[mode][name].append(value.detach().float().item())


class StepByStepTrainer(_CustomLossTrainer):
    """Multi-task loss of Distilling Step-by-Step for a causal LM (label and rationale tasks)."""

    EXTRA_COLUMNS = ("task", "group")

    def __init__(self, *args, alpha: float, group_by_length: bool = False, **kwargs):
        self.alpha, self.group_by_length = alpha, group_by_length
        super().__init__(*args, **kwargs)

    def _wrap_collator(self, base):
        return ExtraFieldsCollator(base, scalars=("task", "group"))

    def _get_train_sampler(self, dataset=None):
        import pyarrow.compute as pc

        dataset = dataset if dataset is not None else self.train_dataset
        lengths = column(dataset, "input_ids", pc.list_value_length) if self.group_by_length else None
        return GroupSampler(
            column(dataset, "group"), self.args.seed, lengths, groups_per_batch=max(1, self.args.per_device_train_batch_size // 2)
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        task = inputs.pop("task")
        inputs.pop("group", None)
        outputs = model(**inputs, fused_lm_head=True, use_cache=False)
        example_loss = per_example_mean(-outputs.log_probs, outputs.label_mask)
        loss = step_by_step_loss(example_loss, task, self.alpha)
        for task_id, name in ((0, "label_loss"), (1, "rationale_loss")):
            chosen = task == task_id
            self._record(name, example_loss[chosen].mean() if chosen.any() else None)
        return (loss, outputs) if return_outputs else loss


class AnswerFirstTrainer(_CustomLossTrainer):
    """Step-by-step in one sequence per problem (``train.layout: answer_first``): the answer's
    tokens and the rationale's are weighed as two tasks, ``alpha`` and ``1 - alpha``."""

    EXTRA_COLUMNS = ("answer_len",)
    default_task = "answer_rationale"

    def __init__(self, *args, alpha: float, **kwargs):
        self.alpha = alpha
        super().__init__(*args, **kwargs)

    def _wrap_collator(self, base):
        return ExtraFieldsCollator(base, scalars=("answer_len",))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        answer_len = inputs.pop("answer_len")
        outputs = model(**inputs, fused_lm_head=True, use_cache=False)
        loss = answer_first_loss(outputs.log_probs, outputs.label_mask, answer_len, self.alpha)
        self._record("answer_first_loss", loss)
        return (loss, outputs) if return_outputs else loss


class TopKDistillTrainer(_CustomLossTrainer):
    """SFT on the teacher's own tokens plus KL to its stored top-k next-token distributions."""

    EXTRA_COLUMNS = ("teacher_ids", "teacher_logprobs")

    def __init__(self, *args, lam: float, **kwargs):
        from llmdistill.stages.train.vocab import token_ids

        self.lam = lam
        super().__init__(*args, **kwargs)
        # the tokenizer's ids (the teacher shares them): rows past them are padding, left out of the KL
        self.shared = token_ids(self.processing_class)

    def _wrap_collator(self, base):
        return ExtraFieldsCollator(base, sequences={"teacher_ids": -1, "teacher_logprobs": 0.0})

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        teacher_ids, teacher_logprobs = inputs.pop("teacher_ids"), inputs.pop("teacher_logprobs")
        labels = inputs.pop("labels")
        outputs = model(**inputs, use_cache=False)
        logits = outputs.logits[:, :-1]
        target = labels[:, 1:]
        mask = target != -100
        ce = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(), target.reshape(-1), ignore_index=-100, reduction="none"
        )
        ce = ce.view(target.shape)
        ce_mean = (ce * mask).sum() / mask.sum().clamp(min=1)
        ids, lps = teacher_ids[:, 1:], teacher_logprobs[:, 1:]
        has_teacher = (ids >= 0).any(-1) & mask
        kl = topk_kl(logits[..., : self.shared], ids.masked_fill(ids >= self.shared, -1), lps)
        kl_mean = (kl * has_teacher).sum() / has_teacher.sum().clamp(min=1)
        loss = (1 - self.lam) * ce_mean + self.lam * kl_mean
        self._record("ce_loss", ce_mean)
        self._record("topk_kl", kl_mean)
        return (loss, outputs) if return_outputs else loss


def make_trainer(
    cfg: Config,
    student_path: str,
    examples: list[TrainExample],
    output_dir: str,
    tokenized: list[dict] | None = None,
    validation: ValidationSet | None = None,
):
    """``trainer_for`` examples in memory (a test, a script): their rows as ``sets.SftRows`` makes
    them, or ``tokenized`` (one row an example: offline top-k or answer_first, which TRL cuts), as
    datasets in memory."""
    from llmdistill.backends.transformers import load_tokenizer

    if tokenized is None:
        rows = SftRows(load_tokenizer(student_path), cfg.train.max_length)
        sets = ExampleSets(None, rows, with_task=cfg.train.mode == "step_by_step")
        for e in examples:
            sets.add(e)
    else:
        sets = ExampleSets(None)
        for e, row in zip(examples, tokenized, strict=True):
            sets.add_row(e, row)
    train, evals = sets.datasets()
    return trainer_for(cfg, student_path, train, evals, output_dir, validation, prepared=tokenized is None)


def trainer_for(
    cfg: Config,
    student_path: str,
    train_dataset,
    eval_dataset,
    output_dir: str,
    validation: ValidationSet | None = None,
    prepared: bool = False,
):
    """The trainer for ``train.mode`` / ``kd.method`` over the sets of ``sets.ExampleSets``, chosen
    by their columns: offline top-k's (``teacher_ids``), answer_first's (``answer_len``), the
    step-by-step trainer, or plain SFT (label, cot). ``prepared``: the rows are as TRL prepares them
    (``sets.SftRows``), so it skips its own pass; ``validation`` for checkpoint selection on accuracy."""
    from transformers import AutoModelForCausalLM

    from llmdistill.backends.transformers import load_tokenizer

    tokenizer = load_tokenizer(student_path)
    model = AutoModelForCausalLM.from_pretrained(student_path, dtype="float32")
    columns = train_dataset.column_names if train_dataset is not None else []
    kwargs = dict(
        model=model,
        args=sft_config(cfg, output_dir, eval_dataset is not None, prepared),
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=lora_config(cfg),
    )
    if "teacher_ids" in columns:
        trainer = TopKDistillTrainer(**kwargs, lam=cfg.kd.lam)
    elif "answer_len" in columns:
        trainer = AnswerFirstTrainer(**kwargs, alpha=cfg.train.alpha)
    elif cfg.train.mode == "step_by_step":
        trainer = StepByStepTrainer(**kwargs, alpha=cfg.train.alpha, group_by_length=cfg.train.group_by_length)
    else:
        trainer = MonitoredSFTTrainer(**kwargs)
        trainer.default_task = cfg.train.mode
    trainer.validation = validation
    return trainer
