"""What a training run measures besides its loss, in a mixin for every trainer here:

- the examples and completion (loss) tokens each task saw, counted from the micro-batches that
  were trained on, so arms with different batching can be compared on what they consumed;
- validation accuracy for checkpoint selection (``train.select_on: accuracy``): after each
  evaluation the student answers the validation problems greedily, with the prompt it will be
  asked at inference, and the answers are checked like the test split's. ``eval_accuracy`` joins
  the metrics that pick the best checkpoint.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch

from llmdistill.answers.checking import check_answer
from llmdistill.answers.reading import parse_completion
from llmdistill.config import DataConfig
from llmdistill.records import Problem

log = logging.getLogger(__name__)
TASK_NAMES = {0: "label", 1: "rationale"}


@dataclass
class ValidationSet:
    """The validation problems as the student is asked them at inference."""

    prompts: list[str]
    problems: list[Problem]
    data: DataConfig
    stops: list[str]
    max_new_tokens: int
    batch_size: int


class Monitored:
    """Mixin for a TRL trainer (put it first among the bases)."""

    default_task = "cot"  # the task of a batch that does not say (plain SFT: the mode's only task)
    validation: ValidationSet | None = None
    # set by the trainer this is mixed into
    model: Any
    processing_class: Any

    def seen(self) -> dict:
        return dict(getattr(self, "_seen", {}))

    def training_step(self, model, inputs, *args, **kwargs):
        labels = inputs.get("labels")
        if "attention_mask" in inputs:  # this process's input tokens (a launch's total sums the processes)
            self.__dict__["_input_tokens"] = self.__dict__.get("_input_tokens", 0) + int(inputs["attention_mask"].sum())
        if labels is not None:
            counts = self.__dict__.setdefault("_seen", Counter())
            tokens = (labels != -100).sum(-1) if labels.dim() == 2 else None
            if "answer_len" in inputs and tokens is not None:  # answer_first: one sequence, the answer's tokens then the rationale's
                for n_answer, n_all in zip(inputs["answer_len"].tolist(), tokens.tolist()):
                    counts["label_examples"] += 1
                    counts["label_tokens"] += n_answer
                    counts["rationale_examples"] += int(n_all > n_answer + 1)  # more than the answer and EOS
                    counts["rationale_tokens"] += n_all - n_answer
                return super().training_step(model, inputs, *args, **kwargs)
            tasks = inputs["task"].tolist() if "task" in inputs else [self.default_task] * labels.shape[0]
            for i, task in enumerate(tasks):
                name = TASK_NAMES.get(task, task)
                counts[f"{name}_examples"] += 1
                if tokens is not None:
                    counts[f"{name}_tokens"] += int(tokens[i])
        return super().training_step(model, inputs, *args, **kwargs)

    def evaluate(self, *args, **kwargs):
        metrics = super().evaluate(*args, **kwargs)
        if self.validation is not None:
            accuracy = self.validation_accuracy()
            metrics["eval_accuracy"] = accuracy
            self.log({"eval_accuracy": accuracy})
            log.info("step %d: validation accuracy %.3f on %d problems", self.state.global_step, accuracy, len(self.validation.problems))
        return metrics

    @torch.no_grad()
    def validation_accuracy(self) -> float:
        v, tok, model = self.validation, self.processing_class, self.model
        assert v is not None  # called only with a validation set
        was_training, side = model.training, tok.padding_side
        model.eval()
        tok.padding_side = "left"
        correct = 0
        try:
            for start in range(0, len(v.prompts), v.batch_size):
                # tokenized as TRL tokenizes the training prompts; stopped where evaluation stops the student
                enc = tok(v.prompts[start : start + v.batch_size], return_tensors="pt", padding=True).to(model.device)
                out = model.generate(
                    **enc,
                    max_new_tokens=v.max_new_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                    stop_strings=v.stops or None,
                    tokenizer=tok,
                )
                texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                for text, problem in zip(texts, v.problems[start : start + v.batch_size]):
                    parsed = parse_completion(text, v.stops, v.data.answer_regex)
                    correct += check_answer(parsed.answer, problem, v.data)[0] == "correct"
        finally:
            tok.padding_side = side
            model.train(was_training)
        return correct / max(len(v.prompts), 1)
