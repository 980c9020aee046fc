"""The whole run config (one section per stage) and the stage hashes that decide what is complete."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import field_validator, model_validator

from llmdistill.config.base import Section
from llmdistill.config.evaluate import EvaluateConfig
from llmdistill.config.filter import FilterConfig
from llmdistill.config.generate import DataConfig, GenerateConfig, ModelConfig
from llmdistill.config.train import KDConfig, StudentConfig, TrainConfig


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

    @model_validator(mode="after")
    def _samples_need_samplers(self):
        if self.evaluate.samples and "teacher" in self.evaluate.models and self.teacher.backend == "replay":
            raise ValueError("evaluate.samples asks every model for sampled answers, but a replayed teacher has only its recorded "
                             "completions: set evaluate.samples: 0 or remove 'teacher' from evaluate.models")
        return self

    def student_task(self) -> str:
        """The prompt task the trained student answers at inference: 'cot', or 'label' (label, step_by_step)."""
        return "cot" if self.train.mode == "cot" else "label"

    def student_shots(self) -> int | None:
        """Exemplars in the student's prompt: train.num_shots, else the teacher's data.num_shots."""
        return self.data.num_shots if self.train.num_shots is None else self.train.num_shots

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
