"""On-policy logit distillation with TRL's ``DistillationTrainer``: the student writes completions
for the training prompts, the teacher scores every token, and the loss is the generalized JSD
(``kd.beta``: 0 forward KL, 0.5 JSD, 1 reverse KL) between their next-token distributions."""

from __future__ import annotations

import logging
import time
import warnings

from llmdistill.config import Config
from llmdistill.prompts import PromptRenderer, load_prompt
from llmdistill.records import FilteredTrace
from llmdistill.stage import StageRun
from llmdistill.train_data import in_subset, in_validation, student_shots, student_task
from llmdistill.vocab import check_same_vocab

log = logging.getLogger(__name__)


def run_on_policy(cfg: Config, run: StageRun, student_path: str, traces: list[FilteredTrace], identity: dict) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM

    from llmdistill.backends.hf import load_tokenizer
    from llmdistill.train import MARKER, _checkpoint_dir, _lora_config, _phase_stats, _save

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TRL currently supports vLLM")
        from trl import DistillationConfig, DistillationTrainer

    k, t = cfg.kd, cfg.train
    teacher_path = k.teacher or cfg.teacher.model_name_or_path
    check_same_vocab(student_path, teacher_path)
    tokenizer = load_tokenizer(student_path)
    render = PromptRenderer(load_prompt(cfg.data.prompt), tokenizer, student_shots(cfg), cfg.data.prompt_format)
    task = student_task(cfg)
    seen, prompts = set(), []
    for tr in traces:  # one prompt per training problem (validation problems stay held out)
        if tr.id not in seen and in_subset(tr.id, t.data_fraction) and not in_validation(tr.id, t.validation_fraction, t.seed):
            seen.add(tr.id)
            prompts.append({"prompt": render(tr.question, task)})
    cuda = torch.cuda.is_available()
    ckpt, resume_from = _checkpoint_dir(run.dir, "checkpoints-kd", {**identity, "phase": "on_policy"}, t.resume)
    args = DistillationConfig(
        output_dir=str(ckpt), learning_rate=k.learning_rate, num_train_epochs=k.num_train_epochs, max_steps=k.max_steps,
        per_device_train_batch_size=k.per_device_train_batch_size, gradient_accumulation_steps=k.gradient_accumulation_steps,
        beta=k.beta, temperature=k.temperature, max_completion_length=k.max_new_tokens, logging_steps=t.logging_steps,
        seed=t.seed, bf16=cuda and torch.cuda.is_bf16_supported(), use_cpu=not cuda, gradient_checkpointing=t.gradient_checkpointing,
        save_strategy="steps" if t.save_steps else "no", save_steps=t.save_steps or 500, save_total_limit=t.save_total_limit,
        report_to=[], dataloader_pin_memory=cuda,
    )
    teacher = AutoModelForCausalLM.from_pretrained(teacher_path, dtype=torch.bfloat16 if args.bf16 else torch.float32)
    trainer = DistillationTrainer(
        model=AutoModelForCausalLM.from_pretrained(student_path, dtype="float32"), teacher_model=teacher, args=args,
        train_dataset=datasets.Dataset.from_list(prompts), processing_class=tokenizer, peft_config=_lora_config(cfg),
    )
    log.info("on-policy distillation from %s on %d prompts (beta %.2f)", teacher_path, len(prompts), k.beta)
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=resume_from)
    stats = _phase_stats(trainer, result, time.time() - t0)
    stats.update(examples=len(prompts), teacher=teacher_path, resumed_from=resume_from)
    out = run.dir / "model"
    _save(trainer, out, t.lora is None or t.lora.merge)
    (out / MARKER).write_text(__import__("json").dumps(identity))
    return stats
