"""Stage 3, train: fine-tune the student on the kept traces with TRL.

``train.mode`` picks the objective (``label``, ``cot``, ``step_by_step``: ``examples``);
``kd.method`` adds logit distillation: ``offline_topk`` on the teacher's stored top-k logprobs
(``offline_kd``), or ``on_policy`` with TRL's ``DistillationTrainer`` after the SFT or instead of
it (``onpolicy``). Before any step a preflight checks lengths against ``max_length`` and estimates
the time (``sft``); checkpoints of an unchanged config are resumed (``checkpoints``); the saved
student is a plain HF folder with a model card (``modelcard``). The trainers and their losses are
in ``trainers`` and ``losses``; ``args`` holds what every TRL config shares.
"""

from llmdistill.stages.train.run import train

__all__ = ["train"]
