"""Stage identity is the content settings alone: an operational setting (concurrency, timeouts,
batch sizes for inference, logging and saving cadence...) never changes what a stage reuses."""

import pytest

from llmdistill.backends import KNOBS
from llmdistill.config import Config, TeacherConfig, TrainConfig
from llmdistill.config.base import OPERATIONAL, role
from llmdistill.outputs.identity import changes, content, content_hash

BASE = {"output_dir": "out", "data": {"path": "data/quickstart"}, "teacher": {"model_name_or_path": "m"}}
# A valid value other than the default for every operational field of the teacher and train sections.
OTHER = {
    "teacher": {
        "backend": "vllm",
        "device": "cpu",
        "batch_size": 3,
        "tensor_parallel_size": 2,
        "pipeline_parallel_size": 2,
        "distributed_executor_backend": "ray",
        "gpu_memory_utilization": 0.5,
        "enable_prefix_caching": False,
        "enforce_eager": True,
        "base_url": "http://127.0.0.1:9999/v1",
        "api_key_env": "OTHER_KEY",
        "concurrency": 16,
        "timeout_s": 5.0,
        "max_retries": 1,
        "backoff_s": 3.0,
    },
    "train": {
        "logging_steps": 1,
        "save_steps": 7,
        "save_total_limit": 5,
        "resume": False,
        "gradient_checkpointing": True,
        "preflight_probe": False,
        "report_to": ["tensorboard"],
    },
}


def _operational(model) -> set[str]:
    return {k for k, f in model.model_fields.items() if role(f) == OPERATIONAL}


def test_the_table_covers_every_operational_field():
    assert set(OTHER["teacher"]) == _operational(TeacherConfig) and set(OTHER["train"]) == _operational(TrainConfig)


def _backend_reading(knob: str) -> str:
    return next((b for b, knobs in KNOBS.items() if knob in knobs), "transformers")


@pytest.mark.parametrize("section,field", [(s, f) for s in OTHER for f in OTHER[s]])
def test_an_operational_change_keeps_every_stage_identity(section, field):
    if section == "teacher":
        backend = OTHER["teacher"]["backend"] if field == "backend" else _backend_reading(field)
        before = {**BASE, "teacher": {"model_name_or_path": "m", "backend": backend if field != "backend" else "transformers"}}
        after = {**before, "teacher": {**before["teacher"], field: OTHER["teacher"][field]}}
        if field == "backend":
            after["teacher"]["backend"] = "vllm"
    else:
        before, after = BASE, {**BASE, "train": {field: OTHER["train"][field]}}
    a, b = Config.model_validate(before), Config.model_validate(after)
    for stage in ("generate", "filter", "train", "evaluate"):
        assert content_hash(a, stage) == content_hash(b, stage) and changes(a, b, stage) == [], stage


def test_a_content_change_is_named_with_both_values():
    a = Config.model_validate(BASE)
    b = Config.model_validate({**BASE, "generate": {"temperature": 0.7, "n": 2}})
    assert changes(a, b, "generate") == ["generate.n: 1 -> 2", "generate.temperature: 0.0 -> 0.7"]
    assert changes(a, b, "train") == changes(a, b, "generate")  # downstream stages read the section too
    c = Config.model_validate({**BASE, "data": {"path": "data/quickstart", "max_train": 5}})
    assert changes(a, c, "generate", selection=False) == []  # rows decide: the selection is not the stage's identity
    assert changes(a, c, "generate") == ["data.max_train: null -> 5"] and changes(a, c, "filter") != []
    assert "data.max_test" not in content(a, "generate") and "data.max_test" in content(a, "filter")


def test_a_lock_left_by_a_killed_process_never_blocks(tmp_path):
    """The stage lock is an OS lock: SIGKILL of its holder releases it at once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from llmdistill.errors import UserError
    from llmdistill.outputs import StageLock

    cfg = Config.model_validate({**BASE, "output_dir": str(tmp_path)})
    code = (
        "import sys, time; from llmdistill.config import Config; from llmdistill.outputs import StageLock; "
        f"cfg = Config.model_validate({{'output_dir': {str(tmp_path)!r}, 'data': {{'path': 'x'}}, 'teacher': {{'model_name_or_path': 'm'}}}}); "
        "lock = StageLock(cfg, 'generate').__enter__(); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UserError, match=rf"being written by another process \(pid {holder.pid}\)"):
        StageLock(cfg, "generate").__enter__()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    t0 = time.time()
    with StageLock(cfg, "generate"):
        assert time.time() - t0 < 1.0


def test_evaluating_the_untrained_student_depends_on_its_prompt_settings_and_the_prompt_file(tmp_path):
    base = {**BASE, "evaluate": {"models": ["teacher", "student_init"]}}
    a = Config.model_validate(base)
    assert changes(a, Config.model_validate({**base, "train": {"learning_rate": 1e-3}}), "evaluate") == []  # not trained here
    assert changes(a, Config.model_validate({**base, "train": {"mode": "label"}}), "evaluate") == ["train.mode: cot -> label"]
    prompt = tmp_path / "p.yaml"
    prompt.write_text("name: p\nexemplars: []\n")
    b = Config.model_validate({**BASE, "data": {"path": "x", "prompt": str(prompt)}})
    before = content(b, "generate")["data.prompt:template_hash"]
    prompt.write_text("name: p\ninstruction: Think.\nexemplars: []\n")
    assert content(b, "generate")["data.prompt:template_hash"] != before  # the file's contents are the prompt


def test_generate_does_not_depend_on_how_answers_are_read_unless_it_rationalizes():
    a = Config.model_validate(BASE)
    b = Config.model_validate({**BASE, "data": {"path": "data/quickstart", "answer_regex": "####\\s*(.+)", "tolerance": 0.01}})
    assert changes(a, b, "generate") == [] and changes(a, b, "filter") != []
    r = {**BASE, "generate": {"rationalize": True}}
    assert changes(Config.model_validate(r), Config.model_validate({**r, "data": b.data.model_dump()}), "generate") != []
