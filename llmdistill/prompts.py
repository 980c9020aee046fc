"""Few-shot chain-of-thought prompt files (``prompts/*.yaml``), rendered as chat or plain text.

The same template renders the teacher's generation prompt, the student's training prompt and
every model's evaluation prompt, so a model is always asked the way it will be checked.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from llmdistill.errors import UserError


class Exemplar(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str
    rationale: str
    answer: str


class PromptTemplate(BaseModel):
    """Instruction + exemplars + formats. ``answer_format`` must contain ``{rationale}`` and ``{answer}``."""

    model_config = ConfigDict(extra="forbid")
    name: str
    # None: the chat template's own default, if it has one (SmolLM2 and Qwen write one); "" drops it
    # (an empty system turn: a few tokens instead of the default's sentence, on every example)
    system: str | None = None
    instruction: str = ""
    question_format: str = "Q: {question}"
    answer_prefix: str = "A:"  # plain-text mode only: the turn marker the model continues after
    answer_format: str = "{rationale} The answer is {answer}."
    stop: list[str] = ["\n\nQ:", "\nQ:"]
    hint_format: str = "{question}\n(Hint: the answer is {answer}. Explain why.)"
    # Step-by-step distillation asks a question as one of two tasks; these replace ``instruction``
    # (task prefixes, as in the paper) and the exemplars show only that task's output.
    label_instruction: str = "[label]"
    rationale_instruction: str = "[rationale]"
    exemplars: list[Exemplar] = []

    @property
    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:12]

    def answer_text(self, rationale: str, answer: str) -> str:
        return self.answer_format.format(rationale=rationale.strip(), answer=answer).strip()

    def output_text(self, task: str, rationale: str, answer: str) -> str:
        """What a model writes for ``task``: rationale and answer (cot), the answer alone (label), or the rationale."""
        if task == "label":
            return self.answer_text("", answer)
        if task == "rationale":
            return rationale.strip()
        return self.answer_text(rationale, answer)

    def _instruction(self, task: str) -> str:
        return {"cot": self.instruction, "label": self.label_instruction, "rationale": self.rationale_instruction}[task]

    def _shots(self, num_shots: int | None) -> list[Exemplar]:
        k = len(self.exemplars) if num_shots is None else num_shots
        if k > len(self.exemplars):
            raise UserError(f"prompt {self.name!r} has {len(self.exemplars)} exemplars, {k} were asked for")
        return self.exemplars[:k]

    def messages(self, question: str, num_shots: int | None = None, task: str = "cot") -> list[dict]:
        """Chat form: the instruction rides on the first user turn; exemplars are earlier turns."""
        msgs = [{"role": "system", "content": self.system}] if self.system is not None else []
        turns = [(e.question, self.output_text(task, e.rationale, e.answer)) for e in self._shots(num_shots)]
        instruction = self._instruction(task)
        for i, (q, a) in enumerate([*turns, (question, None)]):
            content = self.question_format.format(question=q.strip())
            if i == 0 and instruction:
                content = f"{instruction}\n\n{content}"
            msgs.append({"role": "user", "content": content})
            if a is not None:
                msgs.append({"role": "assistant", "content": a})
        return msgs

    def plain(self, question: str, num_shots: int | None = None, task: str = "cot") -> str:
        """Completion form: instruction, then Q/A blocks, ending where the model should continue."""
        instruction = self._instruction(task)
        parts = [instruction] if instruction else []
        for e in self._shots(num_shots):
            q = self.question_format.format(question=e.question.strip())
            parts.append(f"{q}\n{self.answer_prefix} {self.output_text(task, e.rationale, e.answer)}")
        parts.append(f"{self.question_format.format(question=question.strip())}\n{self.answer_prefix}")
        return "\n\n".join(parts)


def load_prompt(path: str | Path) -> PromptTemplate:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: prompt file not found")
    try:
        return PromptTemplate.model_validate(yaml.safe_load(path.read_text()))
    except yaml.YAMLError as e:
        raise UserError(f"{path}: malformed YAML ({e})") from None
    except ValidationError as e:
        err = e.errors()[0]
        raise UserError(f"{path}: invalid prompt file: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


# train.layout answer_first: the student writes its answer, a blank line, then its rationale; asked
# for an answer, it is stopped at the blank line.
ANSWER_SEPARATOR = "\n\n"


def answer_stops(template: PromptTemplate, data) -> list[str]:
    """Where an invented next example starts, for reading answers: the prompt file's stop strings,
    and the data's own question layout at the start of a line -- the labels of
    ``data.question_format`` ("Premise:", "Hypothesis:") or the question field's name
    ("Question:") -- which released completions in the dataset's format run on into. (An invented
    example starts with its question; answer-side labels are left alone, since a model may write
    "Answer:" inside its own answer.)"""
    labels = re.findall(r"(?:^|\n)\s*([A-Za-z][\w ]{0,30}?):\s*\{", data.question_format or "")
    fields = ([] if data.question_format else [data.question_field]) + ["question"]
    markers = dict.fromkeys([*labels, *(f.replace("_", " ").capitalize() for f in fields)])
    return list(dict.fromkeys([*template.stop, *(f"\n{m}:" for m in markers)]))


def wants_chat(prompt_format: str, supports_chat: bool) -> bool:
    """Whether to send chat messages, given ``data.prompt_format`` and what the backend takes."""
    if prompt_format == "chat" and not supports_chat:
        raise UserError("data.prompt_format is 'chat' but the model has no chat template (use 'completion')")
    return prompt_format == "chat" or (prompt_format == "auto" and supports_chat)


def build_prompt(
    template: PromptTemplate, question: str, num_shots: int | None, chat: bool, hint: str | None = None, task: str = "cot"
) -> str | list[dict]:
    """Chat messages or plain text for one question as ``task`` (cot, label or rationale);
    ``hint`` (a gold answer) is for rationalization."""
    if hint is not None:
        question = template.hint_format.format(question=question.strip(), answer=hint)
    return template.messages(question, num_shots, task) if chat else template.plain(question, num_shots, task)


class PromptRenderer:
    """Turns questions into the exact text a given tokenizer's model is fed (for training).

    The student shares the teacher's prompt file and, when pruned, its tokenizer, so training
    and evaluation prompts are byte-identical.
    """

    def __init__(self, template: PromptTemplate, tokenizer, num_shots: int | None, prompt_format: str = "auto"):
        self.template, self.tokenizer, self.num_shots = template, tokenizer, num_shots
        self.use_chat = wants_chat(prompt_format, bool(getattr(tokenizer, "chat_template", None)))

    def __call__(self, question: str, task: str = "cot") -> str:
        prompt = build_prompt(self.template, question, self.num_shots, self.use_chat, task=task)
        if isinstance(prompt, str):
            return prompt
        return self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)

    @property
    def completion_prefix(self) -> str:
        """Plain prompts end at 'A:', so a completion starts with a space."""
        return "" if self.use_chat else " "
