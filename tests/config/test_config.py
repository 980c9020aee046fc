import json
import re

import pytest
import yaml

from llmdistill.config import FILTERS
from llmdistill.config.file import load_config
from llmdistill.errors import UserError
from llmdistill.outputs.identity import content_hash

BASE = {"output_dir": "out", "data": {"path": "data/quickstart"}, "teacher": {"model_name_or_path": "m"}}


def write(tmp_path, cfg) -> str:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg) if isinstance(cfg, dict) else cfg)
    return str(p)


def test_defaults_fill_every_section(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.generate.n == 1 and cfg.train.mode == "cot" and cfg.student.init == "pruned"
    assert cfg.evaluate.models == ["teacher", "student_init", "student"]


def test_misspelt_key_names_it_and_the_allowed_keys(tmp_path):
    bad = {**BASE, "generate": {"temprature": 0.7}}
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, bad))
    msg = str(e.value)
    assert "generate.temprature" in msg and "temperature" in msg and "\n" not in msg


def test_unknown_section_lists_sections(tmp_path):
    with pytest.raises(UserError, match=r"unknown key 'trian'.*train"):
        load_config(write(tmp_path, {**BASE, "trian": {}}))


def test_value_out_of_range_names_the_key(tmp_path):
    with pytest.raises(UserError, match=r"generate.n: Input should be greater than or equal to 1"):
        load_config(write(tmp_path, {**BASE, "generate": {"n": 0}}))


def test_set_overrides_are_typed(tmp_path):
    cfg = load_config(
        write(tmp_path, BASE), ["train.max_steps=2", "generate.temperature=0.5", "evaluate.models=[teacher]", "output_dir=elsewhere"]
    )
    assert cfg.train.max_steps == 2 and cfg.generate.temperature == 0.5
    assert cfg.evaluate.models == ["teacher"] and cfg.output_dir == "elsewhere"


def test_set_unknown_key_fails(tmp_path):
    with pytest.raises(UserError, match="train.max_step'"):
        load_config(write(tmp_path, BASE), ["train.max_step=2"])


@pytest.mark.parametrize("text, match", [("a: [1, 2", "malformed YAML"), ("- 1\n- 2\n", "mapping")])
def test_malformed_yaml_is_one_line(tmp_path, text, match):
    with pytest.raises(UserError, match=match):
        load_config(write(tmp_path, text))


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(str(tmp_path / "nope.yaml"))


def test_stage_hash_depends_only_on_upstream_sections(tmp_path):
    a = load_config(write(tmp_path, BASE))
    b = load_config(write(tmp_path, BASE), ["train.learning_rate=0.1"])
    c = load_config(write(tmp_path, BASE), ["generate.max_new_tokens=7"])
    assert content_hash(a, "generate") == content_hash(b, "generate") and content_hash(a, "filter") == content_hash(b, "filter")
    assert content_hash(a, "train") != content_hash(b, "train")
    assert content_hash(a, "generate") != content_hash(c, "generate")
    d = load_config(write(tmp_path, BASE), ["data.max_test=5"])
    assert content_hash(a, "generate") == content_hash(d, "generate") and content_hash(a, "filter") != content_hash(d, "filter")


def test_pretrained_student_needs_a_model(tmp_path):
    with pytest.raises(UserError, match="student.model_name_or_path is required"):
        load_config(write(tmp_path, {**BASE, "student": {"init": "pretrained"}}))


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["train.lora.rank=8"], "unknown key 'train.lora.rank' (allowed: r, alpha, dropout, target_modules, merge)"),
        (
            ["evaluate.baselines=[{name: b, model_name_or_path: x, foo: 1}]"],
            "unknown key 'evaluate.baselines.0.foo' (allowed: name, model_name_or_path",
        ),
        (["kd.method=offline_topk"], "invalid config: kd.method 'offline_topk' needs the teacher's top-k logprobs"),
        (["train.mode=step_by_step", "train.packing=true"], "train.packing does not combine with mode 'step_by_step'"),
        (["evaluate.samples=2", "evaluate.pass_k=[3]"], "evaluate.pass_k [3]"),
    ],
)
def test_nested_and_cross_section_errors_are_one_line(tmp_path, overrides, match):
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, BASE), overrides)
    assert match in str(e.value) and "\n" not in str(e.value) and "Value error" not in str(e.value)


# ---- every setting is read, or refused -------------------------------------------------------


@pytest.mark.parametrize(
    "backend,knob,value",
    [
        ("transformers", "concurrency", 3),
        ("vllm", "device", "cpu"),
        ("openai", "tensor_parallel_size", 2),
        ("replay", "dtype", "bfloat16"),
        ("openai", "replay", {"train": ["a.json"]}),
        ("openai", "pipeline_parallel_size", 2),
        ("transformers", "distributed_executor_backend", "ray"),
    ],
)
def test_a_setting_of_another_backend_is_refused(tmp_path, backend, knob, value):
    cfg = {**BASE, "teacher": {"model_name_or_path": "m", "backend": backend, knob: value}}
    with pytest.raises(UserError, match=rf"teacher.{knob} is not read by teacher.backend '{backend}'") as e:
        load_config(write(tmp_path, cfg))
    assert "\n" not in str(e.value)


def test_vllm_multi_gpu_settings_reach_the_engine(monkeypatch):
    """pipeline_parallel_size and distributed_executor_backend go to vllm.LLM beside tensor_parallel_size."""
    import sys
    import types

    from llmdistill.backends import teacher_backend
    from llmdistill.config.teacher import TeacherConfig

    seen = {}

    class FakeLLM:
        def __init__(self, **kwargs):
            seen.update(kwargs)

        def get_tokenizer(self):
            return types.SimpleNamespace(chat_template=None)

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=FakeLLM))
    teacher = TeacherConfig(
        model_name_or_path="m", backend="vllm", tensor_parallel_size=4, pipeline_parallel_size=2, distributed_executor_backend="ray"
    )
    teacher_backend(teacher, 0, "train")
    assert seen["tensor_parallel_size"] == 4 and seen["pipeline_parallel_size"] == 2 and seen["distributed_executor_backend"] == "ray"


def test_a_resolved_config_with_every_default_still_loads(tmp_path):
    """config.yaml beside each output repeats every default, other backends' knobs included."""
    from llmdistill.config.file import save_config

    cfg = load_config(
        write(
            tmp_path,
            {
                **BASE,
                "teacher": {"model_name_or_path": "m", "backend": "openai", "concurrency": 4},
                "kd": {"method": "offline_topk", "lam": 0.3},
                "generate": {"logprobs": 5},
            },
        )
    )
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg


@pytest.mark.parametrize(
    "kd,unread",
    [
        ({"beta": 0.1}, "kd.beta"),
        ({"method": "offline_topk", "temperature": 2.0}, "kd.temperature"),
        ({"method": "offline_topk", "learning_rate": 1e-4, "max_steps": 9}, "kd.learning_rate, kd.max_steps"),
        ({"method": "on_policy", "lam": 0.2}, "kd.lam"),
    ],
)
def test_kd_settings_the_method_does_not_read_are_refused(tmp_path, kd, unread):
    cfg = {**BASE, "kd": kd, "generate": {"logprobs": 5}}
    with pytest.raises(UserError, match=unread):
        load_config(write(tmp_path, cfg))


def test_evaluate_engine_settings_and_replay_samples(tmp_path):
    with pytest.raises(UserError, match="evaluate.device is not read with evaluate.backend 'vllm'"):
        load_config(write(tmp_path, {**BASE, "evaluate": {"backend": "vllm", "device": "cpu"}}))
    with pytest.raises(UserError, match="evaluate.gpu_memory_utilization is not read with evaluate.backend 'transformers'"):
        load_config(write(tmp_path, {**BASE, "evaluate": {"gpu_memory_utilization": 0.5}}))
    replay = {"model_name_or_path": "PaLM", "backend": "replay", "replay": {"test": ["t.json"]}}
    with pytest.raises(UserError, match="a replayed teacher has only its recorded completions"):
        load_config(write(tmp_path, {**BASE, "teacher": replay, "evaluate": {"samples": 4, "pass_k": [1]}}))
    assert load_config(write(tmp_path, {**BASE, "teacher": replay, "evaluate": {"samples": 4, "pass_k": [1], "models": ["student"]}}))


@pytest.mark.parametrize(
    "train,unread",
    [
        ({"alpha": 0.3}, "train.alpha"),
        ({"mode": "label", "gold_label": "as_written"}, "train.gold_label"),
        ({"eval_steps": 10}, "train.eval_steps"),
        ({"mode": "cot", "label_source": "gold"}, "train.label_source"),
    ],
)
def test_train_settings_the_objective_does_not_read_are_refused(tmp_path, train, unread):
    with pytest.raises(UserError, match=rf"{unread} is not read with these train settings"):
        load_config(write(tmp_path, {**BASE, "train": train}))
    assert load_config(write(tmp_path, {**BASE, "train": {"mode": "label", "label_source": "gold", "gold_label": "as_written"}}))


@pytest.mark.parametrize(
    "sections,unread",
    [
        ({"filter": {"vote": {"min_agreement": 0.5}}}, "filter.vote.min_agreement is not read because filter.order does not list 'vote'"),
        ({"filter": {"order": ["parse", "length"], "select": {"strategy": "first"}}}, "filter.select.strategy is not read"),
        ({"filter": {"order": ["parse", "length"], "keep_rationalized": False}}, "filter.keep_rationalized is not read"),
        ({"evaluate": {"temperature": 0.9}}, "evaluate.temperature is not read with evaluate.backend 'transformers' and samples 0"),
        ({"evaluate": {"pass_k": [1, 2]}}, "evaluate.pass_k is not read"),
        ({"train": {"validation_fraction": 0.1, "save_steps": 20}}, "train.save_steps is not read with train.validation_fraction"),
        (
            {"student": {"init": "pretrained", "model_name_or_path": "m", "keep_layers": "first_half"}},
            "student.keep_layers is not read with student.init 'pretrained'",
        ),
        ({"export": {"private": False}}, "export.private is not read without export.push_to_hub"),
        ({"data": {"path": ".", "name": "main"}}, "data.name is not read"),
        ({"data": {"path": "d", "labels": ["yes", "no"]}}, "data.labels is not read with data.answer_type 'numeric'"),
        ({"data": {"path": "d", "answer_type": "math", "tolerance": 0.1}}, "data.tolerance is not read with data.answer_type 'math'"),
        (
            {
                "generate": {"engine": "ray", "ray": {"processor": "ray_llm", "num_gpus_per_replica": 1}},
                "teacher": {"model_name_or_path": "m", "backend": "vllm"},
            },
            "generate.ray.num_gpus_per_replica is not read with processor 'ray_llm'",
        ),
    ],
)
def test_settings_that_would_be_ignored_are_refused(tmp_path, sections, unread):
    """The ignored knobs issue 26 listed, each now a one-line refusal at load."""
    cfg = {**BASE, **{k: {**BASE.get(k, {}), **v} if isinstance(v, dict) else v for k, v in sections.items()}}
    with pytest.raises(UserError, match=re.escape(unread)):
        load_config(write(tmp_path, cfg))


def test_a_removed_filter_switch_is_refused_with_what_replaced_it(tmp_path):
    with pytest.raises(UserError, match=r"filter.decontaminate.enabled was removed: a filter runs when filter.order lists it"):
        load_config(write(tmp_path, {**BASE, "filter": {"decontaminate": {"enabled": False}}}))


def test_the_student_init_follows_model_name_or_path_when_left_out(tmp_path):
    """No student section, or one without init: pruned (a copy of the teacher) unless a model is named."""
    assert load_config(write(tmp_path, BASE)).student.init == "pruned"
    assert load_config(write(tmp_path, {**BASE, "student": {"keep_layers": "first_half"}})).student.init == "pruned"
    assert load_config(write(tmp_path, {**BASE, "student": {"model_name_or_path": "m"}})).student.init == "pretrained"


def test_a_stage_folder_saved_by_the_previous_version_stays_complete(tmp_path):
    """A config.yaml written before `enabled` was removed reads as this version writes it: the same
    content settings, so an upgrade re-runs nothing."""
    from llmdistill.outputs.identity import changes, saved_config

    cfg = load_config(
        write(
            tmp_path, {**BASE, "filter": {"order": ["truncated", "parse", "correct", "length", "degenerate", "dedup_exact", "dedup_near"]}}
        )
    )
    old = json.loads(json.dumps(cfg.model_dump(mode="json")))
    old["filter"] = {
        "order": FILTERS,
        "truncated": {"enabled": True},
        "correct": {"enabled": True},
        "vote": {"enabled": False, "min_agreement": 0.5},
        "length": {"enabled": True, "min_words": 1, "max_words": 2048},
        "degenerate": {"enabled": True, "ngram": 4},
        "dedup_exact": {"enabled": True},
        "dedup_near": {"enabled": True},
        "decontaminate": {"enabled": False, "ngram": 8},
        "select": {"enabled": False},
        "keep_rationalized": True,
        "workers": None,
    }
    (tmp_path / "filter").mkdir()
    (tmp_path / "filter" / "config.yaml").write_text(yaml.safe_dump(old))
    saved = saved_config(tmp_path / "filter")
    assert not isinstance(saved, dict) and changes(saved, cfg, "filter") == []
