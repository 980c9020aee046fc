"""Every setting is used or refused, by behaviour: for every field of every section, in every
context below, a non-default value is refused at load, or read by the stages and changes the
stage identity (content) or what reaches an engine or trainer (operational). How it is checked:
tests/settings_audit.py. A planted ignored knob is caught (the second test)."""

from __future__ import annotations

import json
import shutil

import pytest

from llmdistill.config import Config, TrainConfig
from llmdistill.config.base import operational
from tests.conftest import ROOT, SCRIPTED, fake_tensorboardx, write_jsonl
from tests.settings_audit import Context, Harness, audit, fields

pytestmark = pytest.mark.slow

TRAIN = [
    ("Sam has 3 apples and buys 2 more. How many apples does Sam have?", 5),
    ("A farmer keeps 12 cows and sells 4 of them. How many cows are left?", 8),
    ("Lena reads 7 pages on Monday and 9 pages on Tuesday. How many pages did she read?", 16),
    ("A box holds 6 rows of 5 eggs. How many eggs are in the box?", 30),
    ("Tom had 20 marbles and gave 15 to his sister. How many marbles does Tom have now?", 5),
    ("There are 14 birds on a wire and 6 fly away. How many birds remain?", 8),
]
TEST = [
    ("Mia has 11 pens and gets 1 more. How many pens does Mia have?", 12),
    ("A shelf has 9 books and 3 are taken. How many books are on the shelf?", 6),
    ("Each bag holds 4 oranges. How many oranges are in 3 bags?", 12),
    ("Ravi ran 5 km on Saturday and 8 km on Sunday. How far did he run?", 13),
]


def _rows(split: str, problems) -> list[dict]:
    """Each row with alternative columns and answer shapes, so every data setting has a valid other value."""
    return [
        {
            "id": f"{split}{i}",
            "uid": f"u-{split}{i}",
            "question": q,
            "q": q,
            "answer": str(a),
            "a": f"#### {a}",
            "yn": "yes" if a % 2 == 0 else "no",
            "choices": [str(a), str(a + 1)],
            "options": [str(a), str(a + 1)],
            "letter": "a",
        }
        for i, (q, a) in enumerate(problems)
    ]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("settings")
    for folder in ("data", "data2"):
        for split, problems in (("train", TRAIN), ("test", TEST), ("train2", TRAIN), ("test2", TEST)):
            write_jsonl(tmp / folder / f"{split}.jsonl", _rows(split, problems))
    write_jsonl(tmp / "evalset.jsonl", [{"question": "Zed counts 40 stars and then 2 more stars in the sky tonight."}])
    (tmp / "replay.json").write_text(json.dumps([f"The answer is {a}." for _, a in TRAIN]))
    other_model = tmp / "tiny-copy"
    shutil.copytree(tiny_model, other_model)
    answers = {"number": {q: str(a) for q, a in TRAIN + TEST}, "yesno": {q: "yes" if a % 2 == 0 else "no" for q, a in TRAIN + TEST}}
    answers["number"][TRAIN[5][0]] = "9"  # one wrong teacher answer: the filter rejects a trace
    special = {
        "data.path": [str(tmp / "data2")],
        "data.name": ["main"],
        "data.train_split": ["train2"],
        "data.test_split": ["test2"],
        "data.id_field": ["uid", None],
        "data.question_field": ["q"],
        "data.question_format": ["Question: {q}"],
        "data.answer_field": ["a"],
        "data.answer_type": ["math", "choice", "label"],
        "data.choices_field": ["choices", "options"],
        "data.labels": [["yes", "no"], ["yes", "no", "maybe"]],
        "data.gold_regex": [r"(\d+)"],
        "data.answer_regex": [r"answer is (\S+?)\."],
        "data.prompt": [str(ROOT / "prompts" / "arithmetic_label.yaml")],
        "data.max_train": [4],
        "data.max_test": [3],
        "teacher.model_name_or_path": [str(other_model)],
        "student.model_name_or_path": [str(other_model)],
        "kd.teacher": [str(other_model)],
        "teacher.device": ["cpu"],
        "evaluate.device": ["cpu"],
        "teacher.base_url": ["http://127.0.0.1:9/v1", ["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"]],
        "teacher.api_key_env": ["OTHER_API_KEY", None],
        "teacher.replay": [{"train": [str(tmp / "replay.json")]}],
        "teacher.backend": ["vllm", "openai", "replay"],
        "generate.ray.address": ["auto"],
        "train.lr_scheduler_type": ["cosine"],
        "export.license": ["mit"],
        "export.to": [str(tmp / "exported")],
        "export.push_to_hub": ["me/rationales"],
        "filter.decontaminate.eval_sets": [[str(tmp / "evalset.jsonl")]],
        "student.keep_layers": ["first_half", [0, 2]],
        "train.lora.target_modules": [["q_proj", "v_proj"]],
        "evaluate.pass_k": [[1, 2], [2]],
        "kd.vllm_server_base_url": ["http://127.0.0.1:9"],
        "train.max_steps": [2],
        "kd.max_steps": [2],
        "train.eval_max_new_tokens": [6],
        "evaluate.baselines.0.name": ["other"],
        "evaluate.baselines.0.model_name_or_path": [str(tmp / "tiny-copy")],
        "train.num_shots": [0, 2],
        "data.num_shots": [0, 2],
        "train.data_fraction": [0.5],
        "teacher.max_model_len": [512],
        "evaluate.max_model_len": [512],
        "generate.logprobs": [3, 5],
        "generate.n": [2, 3],
        "train.validation_fraction": [0.34, 0.5],
        "train.warmup_steps": [1, 0.5],
        "evaluate.batch_size": [1, 2],
        "teacher.batch_size": [1, 2],
        "filter.order": [
            ["truncated", "parse", "correct", "length", "degenerate", "dedup_exact", "dedup_near", "decontaminate", "vote"],
            ["parse"],
        ],
        "train.report_to": [["tensorboard"]],  # with the stand-in tensorboardX on the path (_harness)
        "teacher.options": [{"note": "other"}],
        "filter.options": [{"tests.test_plugins:drop_odd": {"why": "other"}}],
        "curve.fractions": [[0.9, 1.0]],
        "curve.modes": [["label"], ["cot", "step_by_step"]],
        "curve.seeds": [[1]],
    }
    base = {
        "data": {"path": str(tmp / "data"), "prompt": str(ROOT / "prompts" / "arithmetic_cot.yaml"), "num_shots": 1},
        "teacher": {"model_name_or_path": tiny_model, "batch_size": 4},
        "generate": {"max_new_tokens": 8},
        "student": {"init": "pruned"},
        "train": {"max_steps": 1, "per_device_train_batch_size": 2, "max_length": 512, "logging_steps": 1},
        "evaluate": {"max_new_tokens": 8, "batch_size": 4, "plot": False, "bootstrap": 100},
        "export": {"format": "jsonl"},
    }
    return tmp, tiny_model, answers, special, base


def _ctx(base: dict, name: str, answers: str = "number", stages=None, check_data: bool = False, only=None, **sections) -> Context:
    raw = json.loads(json.dumps(base))
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values} if isinstance(values, dict) else values
    return Context(name, raw, stages or ["generate", "filter", "train", "evaluate", "export"], answers, check_data, only)


def contexts(base: dict, tiny_model: str) -> list[Context]:
    gen = ["generate"]
    all_filters = ["truncated", "parse", "correct", "vote", "length", "degenerate", "dedup_exact", "dedup_near", "decontaminate", "select"]
    return [
        _ctx(base, "default"),
        _ctx(base, "vllm teacher", stages=gen, teacher={"backend": "vllm"}),
        _ctx(base, "openai teacher", stages=gen, teacher={"backend": "openai"}),
        _ctx(base, "replay teacher", stages=gen, teacher={"backend": "replay", "replay": {"train": ["replay.json"]}}),
        _ctx(base, "ray actor pool", stages=gen, generate={"engine": "ray"}),
        _ctx(base, "ray llm", stages=gen, teacher={"backend": "vllm"}, generate={"engine": "ray", "ray": {"processor": "ray_llm"}}),
        _ctx(
            base,
            "sampled, every filter",
            stages=["generate", "filter"],
            generate={"n": 2, "temperature": 0.7, "rationalize": True},
            filter={"order": all_filters},
        ),
        _ctx(base, "label, gold", train={"mode": "label", "label_source": "gold"}, evaluate={"inspect_rationales": 1}),
        _ctx(
            base,
            "step by step, validation on accuracy",
            train={"mode": "step_by_step", "label_source": "gold", "validation_fraction": 0.34, "select_on": "accuracy", "eval_steps": 1},
        ),
        _ctx(base, "answer first", train={"mode": "step_by_step", "layout": "answer_first"}),
        _ctx(base, "lora, pretrained student", student={"init": "pretrained", "model_name_or_path": tiny_model}, train={"lora": {"r": 4}}),
        _ctx(base, "on-policy KD", stages=["generate", "filter", "train"], kd={"method": "on_policy", "max_steps": 1, "max_new_tokens": 4}),
        _ctx(
            base,
            "on-policy KD, teacher on a server",
            stages=["generate", "filter", "train"],
            kd={"method": "on_policy", "max_steps": 1, "max_new_tokens": 4, "teacher_server": {"base_url": "http://127.0.0.1:9/v1"}},
        ),
        _ctx(
            base,
            "offline top-k KD",
            stages=["generate", "filter", "train"],
            generate={"logprobs": 3},
            kd={"method": "offline_topk"},
            filter={"order": ["truncated", "parse", "correct", "degenerate", "dedup_exact"]},
        ),
        _ctx(
            base,
            "sampled evaluation, a baseline",
            stages=["generate", "filter", "train", "evaluate"],
            evaluate={"samples": 2, "baselines": [{"name": "base", "model_name_or_path": tiny_model}]},
        ),
        _ctx(base, "vllm evaluation", stages=["generate", "filter", "train", "evaluate"], evaluate={"backend": "vllm"}),
        _ctx(base, "export to the hub", stages=["generate", "filter", "export"], export={"push_to_hub": "me/x", "format": "parquet"}),
        _ctx(
            base,
            "multiple choice",
            stages=["generate", "filter"],
            check_data=True,
            data={"answer_type": "choice", "choices_field": "choices", "answer_field": "letter"},
        ),
        _ctx(
            base,
            "plugins",
            stages=["generate", "filter"],
            teacher={"backend": SCRIPTED, "options": {"note": "x"}},
            data={"answer_type": "tests.test_plugins:exact"},
            filter={
                "order": ["parse", "correct", "tests.test_plugins:drop_odd"],
                "options": {"tests.test_plugins:drop_odd": {"why": "odd"}},
            },
        ),
        _ctx(
            base,
            "teacher-budget curve",
            stages=["generate", "filter", "curve"],
            only="curve.",  # (the other sections' fields: in the contexts above)
            train={"mode": "step_by_step", "label_source": "gold", "max_steps": 4},
            curve={"fractions": [0.7, 1.0]},
        ),
        _ctx(
            base,
            "yes/no labels",
            "yesno",
            stages=["generate", "filter"],
            check_data=True,
            data={"answer_type": "label", "labels": ["yes", "no"], "answer_field": "yn"},
        ),
    ]


def _harness(monkeypatch, world, config_cls=Config):
    tmp, tiny_model, answers, special, base = world
    monkeypatch.syspath_prepend(str(fake_tensorboardx(tmp / "site")))
    monkeypatch.chdir(tmp)
    h = Harness(monkeypatch, tmp / "runs", config_cls, dict(answers["number"]), special)
    return h, contexts(base, tiny_model), answers


def _run(h, ctxs, answers, only=None):
    verdicts = []
    for i, ctx in enumerate(ctxs):
        h.answers.clear()
        h.answers.update(answers[ctx.answers])
        ctx.raw["output_dir"] = str(h.tmp / f"ctx{i}")
        verdicts += audit(h, [ctx], only)
    return verdicts


def test_every_setting_is_used_or_refused(monkeypatch, world, capsys):
    h, ctxs, answers = _harness(monkeypatch, world)
    verdicts = _run(h, ctxs, answers)
    covered = {v.path for v in verdicts}
    every = {p for p, _ in fields()}
    bad = [v for v in verdicts if not v.ok]
    with capsys.disabled():
        outcomes = {o: sum(v.outcome == o for v in verdicts) for o in sorted({v.outcome for v in verdicts})}
        print(
            f"\nsettings audit: {len(covered)} of {len(every)} fields, {len(ctxs)} contexts, {len(verdicts)} (context, field) checks, "
            f"{h.runs} stage runs: {json.dumps(outcomes)}"
        )
    assert covered == every, sorted(every - covered)
    assert not bad, "\n".join(f"[{v.context}] {v.path}: {v.outcome} ({v.detail})" for v in bad)


class PlantedTrain(TrainConfig):
    """The train section with a knob nothing reads: what the audit exists to catch."""

    planted_knob: int = operational(3, ge=1)


class PlantedConfig(Config):
    train: PlantedTrain = PlantedTrain()


def test_a_planted_ignored_knob_is_caught(monkeypatch, world, capsys):
    h, ctxs, answers = _harness(monkeypatch, world, PlantedConfig)
    verdicts = _run(h, ctxs[:1], answers, only="train.planted_knob")
    with capsys.disabled():
        print("\n" + "\n".join(f"planted: [{v.context}] {v.path}: {v.outcome} ({v.detail})" for v in verdicts))
    assert [(v.path, v.outcome) for v in verdicts] == [("train.planted_knob", "NOT READ")]
