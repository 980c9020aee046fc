import pytest
import yaml

from llmdistill.config.file import load_config
from llmdistill.errors import UserError

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
    cfg = load_config(write(tmp_path, BASE), ["train.max_steps=2", "generate.temperature=0.5", "evaluate.models=[teacher]", "output_dir=elsewhere"])
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
    assert a.stage_hash("generate") == b.stage_hash("generate") and a.stage_hash("filter") == b.stage_hash("filter")
    assert a.stage_hash("train") != b.stage_hash("train")
    assert a.stage_hash("generate") != c.stage_hash("generate")
    d = load_config(write(tmp_path, BASE), ["data.max_test=5"])
    assert a.stage_hash("generate") == d.stage_hash("generate") and a.stage_hash("filter") != d.stage_hash("filter")


def test_pretrained_student_needs_a_model(tmp_path):
    with pytest.raises(UserError, match="student.model_name_or_path is required"):
        load_config(write(tmp_path, {**BASE, "student": {"init": "pretrained"}}))


@pytest.mark.parametrize("overrides,match", [
    (["train.lora.rank=8"], "unknown key 'train.lora.rank' (allowed: r, alpha, dropout, target_modules, merge)"),
    (["evaluate.baselines=[{name: b, model_name_or_path: x, foo: 1}]"], "unknown key 'evaluate.baselines.0.foo' (allowed: name, model_name_or_path"),
    (["kd.method=offline_topk"], "invalid config: kd.method 'offline_topk' needs the teacher's top-k logprobs"),
    (["train.mode=step_by_step", "train.packing=true"], "train.packing does not combine with mode 'step_by_step'"),
    (["evaluate.samples=2", "evaluate.pass_k=[3]"], "evaluate.pass_k [3]"),
])
def test_nested_and_cross_section_errors_are_one_line(tmp_path, overrides, match):
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, BASE), overrides)
    assert match in str(e.value) and "\n" not in str(e.value) and "Value error" not in str(e.value)
