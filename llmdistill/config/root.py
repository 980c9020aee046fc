"""The whole run config: one section per stage, and the checks that span sections."""

from __future__ import annotations

from pydantic import field_validator, model_validator

from llmdistill.config.base import Section, operational
from llmdistill.config.curve import CurveConfig
from llmdistill.config.data import DataConfig
from llmdistill.config.evaluate import EvaluateConfig
from llmdistill.config.export import ExportConfig
from llmdistill.config.filter import FilterConfig
from llmdistill.config.generate import GenerateConfig
from llmdistill.config.teacher import TeacherConfig
from llmdistill.config.train import KDConfig, StudentConfig, TrainConfig


class Config(Section):
    output_dir: str = operational()
    data: DataConfig
    teacher: TeacherConfig
    generate: GenerateConfig = GenerateConfig()
    filter: FilterConfig = FilterConfig()
    student: StudentConfig = StudentConfig()
    train: TrainConfig = TrainConfig()
    kd: KDConfig = KDConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    export: ExportConfig = ExportConfig()
    curve: CurveConfig = CurveConfig()

    @model_validator(mode="after")
    def _kd_inputs(self):
        if self.kd.method == "offline_topk":
            if self.train.mode != "cot":
                raise ValueError("kd.method 'offline_topk' trains on the teacher's own tokens: it needs train.mode 'cot'")
            if not self.generate.logprobs:
                raise ValueError("kd.method 'offline_topk' needs the teacher's top-k logprobs: set generate.logprobs (e.g. 20)")
            if self.train.packing:
                raise ValueError("kd.method 'offline_topk' does not combine with train.packing")
            if self.train.thinking == "drop":
                raise ValueError(
                    "kd.method 'offline_topk' trains on the teacher's own tokens, thinking included: train.thinking 'drop' cannot apply"
                )
        return self

    @model_validator(mode="after")
    def _save_steps_are_read(self):
        t = self.train
        if t.validation_fraction and t.save_steps and self.kd.method != "on_policy":
            raise ValueError(
                f"train.save_steps is not read with train.validation_fraction: the SFT phase saves a checkpoint at every "
                f"train.eval_steps ({t.eval_steps}), the candidates for the best one (and a rerun resumes from them); remove train.save_steps"
            )
        return self

    @model_validator(mode="after")
    def _ray_llm_is_for_vllm(self):
        if self.generate.ray.processor == "ray_llm" and self.teacher.backend != "vllm":
            raise ValueError(
                f"generate.ray.processor 'ray_llm' is Ray's vLLM batch API: it needs teacher.backend 'vllm' "
                f"(not {self.teacher.backend!r}); other backends run in the actor pool (processor: actor_pool)"
            )
        return self

    @model_validator(mode="after")
    def _samples_need_samplers(self):
        if self.evaluate.samples and "teacher" in self.evaluate.models and self.teacher.backend == "replay":
            raise ValueError(
                "evaluate.samples asks every model for sampled answers, but a replayed teacher has only its recorded "
                "completions: set evaluate.samples: 0 or remove 'teacher' from evaluate.models"
            )
        return self

    def student_task(self) -> str:
        """The prompt task the trained student answers at inference: 'cot', or 'label' (label, step_by_step)."""
        return "cot" if self.train.mode == "cot" else "label"

    def answer_first(self) -> bool:
        """A step-by-step student that writes its answer, a blank line, then its rationale."""
        return self.train.mode == "step_by_step" and self.train.layout == "answer_first"

    def student_shots(self) -> int | None:
        """Exemplars in the student's prompt: train.num_shots, else the teacher's data.num_shots."""
        return self.data.num_shots if self.train.num_shots is None else self.train.num_shots

    @field_validator("evaluate")
    @classmethod
    def _unique_models(cls, v: EvaluateConfig) -> EvaluateConfig:
        if len(set(v.models)) != len(v.models):
            raise ValueError(f"evaluate.models lists a model twice: {v.models}")
        return v
