"""Stage 3, train: fine-tune the student on the kept traces with TRL's ``SFTTrainer``.

``cot`` mode: prompt -> rationale + answer as one completion, loss on the completion only.
The prompt is rendered by the same template the student will be evaluated with, and the
completion is re-written from the parsed rationale and answer, so runaway teacher text after
the answer never reaches the student.
"""

from __future__ import annotations

import logging
import shutil
import time
import warnings

from llmdistill.config import Config
from llmdistill.errors import UserError
from llmdistill.jsonl import read_rows, write_rows
from llmdistill.prompts import PromptRenderer, load_prompt
from llmdistill.records import FilteredTrace, TrainExample
from llmdistill.stage import StageRun, require_complete
from llmdistill.student import materialize_student

log = logging.getLogger(__name__)


def build_examples(cfg: Config, traces: list[FilteredTrace], tokenizer) -> list[TrainExample]:
    template = load_prompt(cfg.data.prompt)
    render = PromptRenderer(template, tokenizer, cfg.data.num_shots, cfg.data.prompt_format)
    return [
        TrainExample(id=t.id, sample=t.sample, prompt=render(t.question), completion=render.completion_prefix + template.answer_text(t.rationale or "", t.pred or ""))
        for t in traces
    ]


def _sft_config(cfg: Config, output_dir: str):
    import torch
    from trl import SFTConfig

    t = cfg.train
    cuda = torch.cuda.is_available()
    return SFTConfig(
        output_dir=output_dir,
        learning_rate=t.learning_rate,
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        max_length=t.max_length,
        warmup_steps=t.warmup_steps,
        lr_scheduler_type=t.lr_scheduler_type,
        weight_decay=t.weight_decay,
        logging_steps=t.logging_steps,
        seed=t.seed,
        completion_only_loss=True,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        use_cpu=not cuda,
        save_strategy="no",
        report_to=[],
        disable_tqdm=False,
        dataloader_pin_memory=cuda,
    )


def make_trainer(cfg: Config, student_path: str, examples: list[TrainExample], output_dir: str):
    """A TRL ``SFTTrainer`` over prompt/completion pairs; the loss covers completion tokens only."""
    import datasets
    from transformers import AutoModelForCausalLM

    from llmdistill.backends.hf import load_tokenizer

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TRL currently supports vLLM")
        from trl import SFTTrainer

    tokenizer = load_tokenizer(student_path)
    model = AutoModelForCausalLM.from_pretrained(student_path, dtype="float32")
    dataset = datasets.Dataset.from_list([{"prompt": e.prompt, "completion": e.completion} for e in examples])
    return SFTTrainer(model=model, args=_sft_config(cfg, output_dir), train_dataset=dataset, processing_class=tokenizer)


def train(cfg: Config) -> dict:
    require_complete(cfg, "filter")
    with StageRun(cfg, "train") as run:
        traces = read_rows(cfg.stage_dir("filter") / "kept.jsonl", FilteredTrace)
        if not traces:
            raise UserError(f"{cfg.stage_dir('filter') / 'kept.jsonl'} is empty: the filter kept no traces to train on")
        student_path = materialize_student(cfg)
        from llmdistill.backends.hf import load_tokenizer

        examples = build_examples(cfg, traces, load_tokenizer(student_path))
        write_rows(run.dir / "examples.jsonl", examples)
        trainer = make_trainer(cfg, student_path, examples, str(run.dir / "checkpoints"))
        t0 = time.time()
        result = trainer.train()
        seconds = time.time() - t0
        tmp, final = run.dir / "model.tmp", run.dir / "model"
        shutil.rmtree(tmp, ignore_errors=True)
        trainer.save_model(str(tmp))
        trainer.processing_class.save_pretrained(str(tmp))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        tokens = sum(len(x["input_ids"]) for x in trainer.train_dataset) * result.metrics.get("epoch", 1.0)
        stats = {
            "mode": cfg.train.mode,
            "student_init": student_path,
            "examples": len(examples),
            "steps": result.global_step,
            "train_loss": round(result.training_loss, 4),
            "train_seconds": round(seconds, 2),
            "tokens_seen": int(tokens),
            "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
            "log_history": trainer.state.log_history,
        }
        return run.finish(stats)
