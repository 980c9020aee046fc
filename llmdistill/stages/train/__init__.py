"""Stage 3, train: fine-tune the student on the kept traces with TRL.

``train.mode`` picks the objective (``label``, ``cot``, ``step_by_step``: ``examples``);
``kd.method`` adds logit distillation: ``offline_topk`` on the teacher's stored top-k logprobs
(``offline_kd``), or ``on_policy`` with TRL's ``DistillationTrainer`` after the SFT or instead of
it (``onpolicy``). Before any step a preflight checks lengths against ``max_length`` and estimates
the time (``sft``); checkpoints of an unchanged config are resumed (``checkpoints``); the saved
student is a plain HF folder with a model card (``modelcard``). The trainers and their losses are
in ``trainers`` and ``losses``; ``args`` holds what every TRL config shares.

The SFT phase streams: the kept traces are read as the examples are built, and the examples go
to ``examples.jsonl`` and to Arrow files the trainer memory-maps (``sets``), so memory holds a few
bytes an example (``examples``, ``sets``), not the set. Kept in lists: ``kd.method: offline_topk``'s
traces, examples and teacher rows (``offline_kd``), and on-policy distillation's prompts, one a
training problem (``onpolicy``).
"""

from llmdistill.stages.train.run import train

__all__ = ["train"]
