"""The ``student``, ``train`` and ``kd`` sections: the student, its SFT objective and logit distillation."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from llmdistill.config.base import Section, content, operational

# transformers' trackers (transformers.integrations.integration_utils.INTEGRATION_TO_CALLBACK; a test
# checks the two agree)
REPORTERS = (
    "azure_ml", "clearml", "codecarbon", "comet_ml", "dagshub", "dvclive", "flyte", "kubeflow", "mlflow", "neptune", "swanlab",
    "tensorboard", "trackio", "wandb",
)  # fmt: skip


class StudentConfig(Section):
    """The student: a pretrained model, or a depth-pruned copy of the teacher.

    ``init`` left out means ``pretrained`` when ``model_name_or_path`` is given and ``pruned``
    (a copy of the teacher) when it is not, whether the section is absent or partly written."""

    init: Literal["pretrained", "pruned"] = content("pruned")
    model_name_or_path: str | None = content(None)  # for init=pretrained; for init=pruned the source (default: teacher)
    keep_layers: Literal["every_other", "first_half"] | list[int] = content("every_other")  # init=pruned only

    @model_validator(mode="before")
    @classmethod
    def _default_init(cls, raw):
        if isinstance(raw, dict) and "init" not in raw:
            raw = {**raw, "init": "pretrained" if raw.get("model_name_or_path") else "pruned"}
        return raw

    @model_validator(mode="after")
    def _needs_model(self):
        if self.init == "pretrained" and not self.model_name_or_path:
            raise ValueError("student.model_name_or_path is required when student.init is 'pretrained'")
        if self.init == "pretrained":
            self.refuse_unread(
                "student", {"init", "model_name_or_path"}, "with student.init 'pretrained' (keep_layers prunes a copy: init 'pruned')"
            )
        return self


class LoraSection(Section):
    """``peft`` LoRA adapters instead of full fine-tuning; merged into the saved student."""

    r: int = content(16, ge=1)
    alpha: int = content(32, ge=1)
    dropout: float = content(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = content("all-linear")
    merge: bool = content(True)  # save a plain model (loads with AutoModelForCausalLM and vLLM); False: the adapter only


class TrainConfig(Section):
    """The SFT objective and the trainer's knobs (TRL ``SFTTrainer`` underneath)."""

    # label: answer only (the paper's standard fine-tuning baseline); cot: rationale + answer as one
    # completion; step_by_step: label and rationale as two tasks, alpha * L_label + (1 - alpha) * L_rationale.
    mode: Literal["label", "cot", "step_by_step"] = content("cot")
    label_source: Literal["teacher", "gold"] = content("teacher")  # the answer the label task learns
    # gold labels: the value ('450') or the answer field as written, tidied ('(10 * 45)' for SVAMP's
    # '( 10.0 * 45.0 )': the equation target the step-by-step paper trains on)
    gold_label: Literal["value", "as_written"] = content("value")
    alpha: float = content(0.5, ge=0, le=1)  # step_by_step: weight of the label task
    # step_by_step with gold labels: which problems give a label example. 'all_problems' (the paper's):
    # every train problem with a gold answer, so the label task sees what label training sees, and the
    # rationale task the kept traces; 'traces': only the problems with a kept teacher trace.
    labels_for: Literal["traces", "all_problems"] = content("all_problems")
    # step_by_step batching (two_tasks). 'problems' (the paper's): per_device_train_batch_size counts
    # problems, each giving its label and its rationale example, so the label task sees as many labels
    # a step as label training does and the rationale task comes on top. 'examples': the batch counts
    # examples (half labels).
    batch_unit: Literal["examples", "problems"] = content("problems")
    # step_by_step layout. two_tasks: a [label] and a [rationale] example per problem (the paper's, for
    # an encoder-decoder). answer_first: one sequence per problem for a causal student, question ->
    # answer, then a blank line and the rationale; the loss is still alpha * mean(answer-token losses)
    # + (1 - alpha) * mean(rationale-token losses) per example, and inference stops after the answer.
    layout: Literal["two_tasks", "answer_first"] = content("two_tasks")
    group_by_length: bool = content(False)  # batches of similar lengths (less padding); a problem's examples stay together
    # A reasoning teacher's thinking (<think> ... </think> or the server's reasoning_content): keep it
    # in the student's rationale (cot: inside <think> tags), or drop it and keep what follows it.
    thinking: Literal["keep", "drop"] = content("keep")
    # Exemplars in the student's prompt (training and its evaluation); None: data.num_shots, the
    # teacher's. Fine-tuned students usually need none, and shorter prompts train faster.
    num_shots: int | None = content(None, ge=0)
    # Train on this share of the training problems (a stable subset by problem id, the same for
    # every mode), for data-efficiency studies (llmdistill curve). The validation problems are held
    # out of the whole split first, so every fraction picks its checkpoint on the same problems.
    data_fraction: float = content(1.0, gt=0, le=1)
    learning_rate: float = content(5e-5, gt=0)
    num_train_epochs: float = content(1.0, gt=0)
    max_steps: int = content(-1)
    per_device_train_batch_size: int = content(4, ge=1)
    gradient_accumulation_steps: int = content(1, ge=1)
    max_length: int = content(1024, ge=8)
    on_overlength: Literal["refuse", "drop"] = content("refuse")  # an example longer than max_length would lose its answer
    packing: bool = content(False)  # BFD packing of several examples per row (loss masks kept per example)
    warmup_steps: float = content(0.0, ge=0)  # < 1: a fraction of the total steps
    lr_scheduler_type: str = content("linear")
    weight_decay: float = content(0.0)
    logging_steps: int = operational(5, ge=1)
    # Where training metrics also go, as transformers names the trackers (tensorboard, wandb, trackio,
    # mlflow, ...; its package installed). Default none: metrics stay in train/stats.json. Tensorboard
    # writes under train/checkpoints/runs/; the others where their own settings say (e.g. WANDB_DIR).
    report_to: list[Literal[REPORTERS]] = operational([])  # type: ignore[valid-type]
    seed: int = content(0)
    # Checkpoint selection on held-out training problems (never the test split): a fraction of the
    # problems, split by problem id, evaluated every eval_steps; the best eval loss is kept.
    validation_fraction: float = content(0.0, ge=0, lt=1)
    eval_steps: int = content(50, ge=1)
    # What picks the best checkpoint: the validation 'loss', or 'accuracy': greedy answers of the
    # student to its inference prompt on the validation problems, checked like the test split.
    select_on: Literal["loss", "accuracy"] = content("loss")
    # select_on accuracy: tokens per validation answer (None: 32 for a label prompt, evaluate.max_new_tokens for cot)
    eval_max_new_tokens: int | None = content(None, ge=1)
    save_steps: int = operational(0, ge=0)  # > 0: checkpoints every save_steps, resumed after a crash
    save_total_limit: int = operational(2, ge=1)
    resume: bool = operational(True)  # continue from the newest checkpoint of an unchanged config
    gradient_checkpointing: bool = operational(False)
    lora: LoraSection | None = None
    preflight_probe: bool = operational(True)  # time one forward/backward to estimate the training time

    @model_validator(mode="after")
    def _compatible(self):
        if self.packing and self.mode == "step_by_step":
            raise ValueError("train.packing does not combine with mode 'step_by_step': its loss weights whole examples, one per row")
        if self.layout != "two_tasks" and self.mode != "step_by_step":
            raise ValueError("train.layout is a setting of train.mode 'step_by_step'")
        if self.select_on == "accuracy" and not self.validation_fraction:
            raise ValueError("train.select_on 'accuracy' needs validation problems: set train.validation_fraction (e.g. 0.1)")
        self.refuse_unread(
            "train",
            set(type(self).model_fields) - self.unread(),
            f"with these train settings (mode {self.mode!r}, "
            f"label_source {self.label_source!r}, validation_fraction {self.validation_fraction})",
        )
        return self

    def unread(self) -> set[str]:
        """The settings these train settings do not read (refused when given)."""
        unread = set()
        if self.mode != "step_by_step":
            unread |= {"alpha", "batch_unit", "layout"}
        if self.mode != "step_by_step" or self.label_source != "gold":
            unread |= {"labels_for"}
        if self.layout != "two_tasks":
            unread |= {"batch_unit"}  # one sequence per problem
        if self.mode == "cot":
            unread |= {"label_source"}
        if self.label_source != "gold" or self.mode == "cot":
            unread |= {"gold_label"}
        if not self.validation_fraction:
            unread |= {"eval_steps", "select_on"}
        if self.select_on == "loss":
            unread |= {"eval_max_new_tokens"}
        return unread


class TeacherServerConfig(Section):
    """On-policy distillation from a teacher on its own server: vLLM's OpenAI-compatible server
    (``vllm serve TEACHER --max-logprobs K``) scores the student's completions with its top-k
    log-probabilities per token (``prompt_logprobs``). Requests fail, retry and back off as the
    ``openai`` backend's do."""

    base_url: str = operational("http://127.0.0.1:8000/v1")  # the server's OpenAI-compatible URL
    top_k: int = content(20, ge=1)  # teacher log-probabilities per token (at most the server's --max-logprobs, vLLM's default 20)
    api_key_env: str | None = operational("OPENAI_API_KEY")
    concurrency: int = operational(8, ge=1)  # sequences scored at once
    timeout_s: float = operational(120.0, gt=0)
    max_retries: int = operational(6, ge=0)
    backoff_s: float = operational(1.0, ge=0)


class KDConfig(Section):
    """Logit distillation: on-policy (TRL ``DistillationTrainer``) or offline on stored top-k logprobs."""

    # on_policy: the student generates, the teacher scores every token, generalized JSD with beta;
    # offline_topk: SFT on the teacher's own tokens with (1 - lam) * CE + lam * KL(teacher top-k || student).
    method: Literal["none", "on_policy", "offline_topk"] = content("none")
    # on_policy: the scoring teacher (default teacher.model_name_or_path): one with the student's
    # tokenizer (padded embedding rows included), or another tokenizer (aligned by text, GOLD's ULD).
    # With teacher_server: where the served teacher's tokenizer loads from.
    teacher: str | None = content(None)
    teacher_server: TeacherServerConfig | None = None  # on_policy: the teacher on a server instead of in this process
    after_sft: bool = content(True)  # on_policy: run after the SFT of train.mode (False: instead of it)
    beta: float = content(0.5, ge=0, le=1)  # 0: forward KL, 0.5: JSD, 1: reverse KL
    temperature: float = content(1.0, gt=0)
    max_new_tokens: int = content(128, ge=1)
    learning_rate: float = content(1e-5, gt=0)
    num_train_epochs: float = content(1.0, gt=0)
    max_steps: int = content(-1)
    per_device_train_batch_size: int = content(4, ge=1)
    gradient_accumulation_steps: int = content(1, ge=1)
    lam: float = content(0.5, ge=0, le=1)  # offline_topk: weight of the KL term
    # on_policy with a teacher of another tokenizer (GOLD): besides ULD's sorted-probability distance,
    # a generalized JSD (beta) on the tokens both vocabularies spell the same way
    uld_hybrid: bool = content(True)
    # on_policy: the engine that writes the student's completions. vllm (a GPU): TRL's vLLM integration,
    # colocated with training or a `trl vllm-serve` server at vllm_server_base_url.
    generation: Literal["transformers", "vllm"] = operational("transformers")
    vllm_mode: Literal["colocate", "server"] = operational("colocate")
    vllm_gpu_memory_utilization: float = operational(0.3, gt=0, le=1)  # colocate: the student engine's share of the GPU
    vllm_server_base_url: str | None = operational(None)  # server mode

    @model_validator(mode="after")
    def _read_by_the_method(self):
        reads = {"method"} | READ_BY_KD_METHOD[self.method]
        if self.method == "on_policy" and self.teacher_server is not None and self.temperature != 1.0:
            raise ValueError(
                "kd.temperature is not read with kd.teacher_server: the server scores at temperature 1 "
                "(vLLM's prompt log-probabilities ignore sampling settings); remove it or use an in-process teacher"
            )
        if self.generation == "vllm":
            reads |= {"vllm_mode", "vllm_gpu_memory_utilization"} if self.vllm_mode == "colocate" else {"vllm_mode", "vllm_server_base_url"}
        self.refuse_unread(
            "kd",
            reads,
            f"with kd.method {self.method!r}"
            + (
                " (offline_topk trains with the train section's learning rate, steps and batch size)"
                if self.method == "offline_topk"
                else ""
            ),
        )
        return self


READ_BY_KD_METHOD = {
    "none": set(),
    "on_policy": {
        "teacher",
        "after_sft",
        "beta",
        "temperature",
        "max_new_tokens",
        "learning_rate",
        "num_train_epochs",
        "max_steps",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "generation",
        "teacher_server",
        "uld_hybrid",
    },
    "offline_topk": {"lam"},
}
