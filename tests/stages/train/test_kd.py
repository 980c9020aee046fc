"""Logit distillation: on-policy (TRL DistillationTrainer) and offline top-k, on tiny local models."""

import pytest
import torch
from safetensors.torch import load_file

from llmdistill.config.file import load_config
from llmdistill.errors import UserError
from llmdistill.outputs import stage_dir
from llmdistill.stages.train import train
from tests.conftest import ScriptedBackend, run_to_filter, save_tiny_llama, weights_changed


def test_on_policy_kd_runs_two_steps(make_config, scripted):
    cfg = run_to_filter(
        make_config, scripted, kd={"method": "on_policy", "max_steps": 2, "max_new_tokens": 8, "per_device_train_batch_size": 2}
    )
    stats = train(cfg)
    assert stats["sft"]["steps"] == 2 and stats["kd"]["steps"] == 2
    after_sft = load_file(stage_dir(cfg, "train") / "sft_model" / "model.safetensors")
    final = load_file(stage_dir(cfg, "train") / "model" / "model.safetensors")
    assert any(not torch.equal(after_sft[k], final[k]) for k in final)


def test_a_student_with_another_tokenizer_and_padding_rows_distils_across_tokenizers(make_config, scripted, tmp_path):
    """A 300-id tokenizer on a 400-row model: GOLD's ULD (once refused as a vocabulary mismatch); the
    student never writes a padding id, which no tokenizer could spell."""
    from tests.conftest import build_tokenizer

    other = tmp_path / "other-student"
    save_tiny_llama(other, hidden=16, layers=2, heads=2, kv_heads=1)
    tok = build_tokenizer(vocab_size=300)
    tok.save_pretrained(other)
    cfg = run_to_filter(
        make_config,
        scripted,
        student={"init": "pretrained", "model_name_or_path": str(other)},
        kd={"method": "on_policy", "after_sft": False, "max_steps": 2},
    )
    stats = train(cfg)
    assert stats["kd"]["pair"] == "cross" and stats["kd"]["steps"] == 2


class LogprobBackend(ScriptedBackend):
    """The scripted teacher, returning the generated token ids and a fake top-3 distribution."""

    def generate(self, requests, params):
        out = super().generate(requests, params)
        for completions in out:
            for c in completions:
                ids = self.tokenizer(c.text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
                c.token_ids = ids
                c.top_logprobs = [[[t, -0.4], [(t + 1) % 300, -1.6], [(t + 7) % 300, -2.5]] for t in ids]
        return out


def test_offline_topk_kd_trains_on_the_teachers_tokens(make_config, scripted):
    cfg = run_to_filter(
        make_config,
        scripted,
        teacher={"backend": "tests.stages.train.test_kd:LogprobBackend"},
        generate={"logprobs": 3},
        kd={"method": "offline_topk", "lam": 0.5},
    )
    stats = train(cfg)
    assert stats["steps"] == 2 and weights_changed(cfg)
    logs = [h for h in stats["sft"]["log_history"] if "topk_kl" in h]
    assert logs and all(h["topk_kl"] > 0 and h["ce_loss"] > 0 for h in logs)
    assert stats["sft"]["preflight"]["offline_topk"]["k"] == 3


def test_offline_topk_needs_logprobs_and_cot(make_config, scripted):
    with pytest.raises(UserError, match="generate.logprobs"):
        load_config(make_config(kd={"method": "offline_topk"}))
    with pytest.raises(UserError, match="train.mode 'cot'"):
        load_config(make_config(kd={"method": "offline_topk"}, generate={"logprobs": 5}, train={"mode": "label"}))


def test_on_policy_kd_follows_the_train_sections_schedule(make_config, scripted):
    """train.lr_scheduler_type / warmup_steps / weight_decay reach the on-policy phase too."""
    cfg = run_to_filter(
        make_config,
        scripted,
        train={"lr_scheduler_type": "constant"},
        kd={
            "method": "on_policy",
            "after_sft": False,
            "max_steps": 2,
            "max_new_tokens": 4,
            "learning_rate": 3e-4,
            "per_device_train_batch_size": 2,
        },
    )
    stats = train(cfg)
    rates = [h["learning_rate"] for h in stats["kd"]["log_history"] if "learning_rate" in h]
    assert len(rates) == 2 and all(r == pytest.approx(3e-4) for r in rates)  # linear (the default) would decay to 1.5e-4


def test_vllm_generation_for_on_policy_kd_is_refused_without_a_gpu(make_config, scripted):
    cfg = run_to_filter(make_config, scripted, kd={"method": "on_policy", "after_sft": False, "max_steps": 1, "generation": "vllm"})
    with pytest.raises(
        UserError, match="kd.generation 'vllm' writes the student's completions with vLLM on a CUDA GPU.*kd.generation: transformers"
    ):
        train(cfg)
    assert not (stage_dir(cfg, "train") / "checkpoints").exists()  # refused before any SFT step, not after
    with pytest.raises(UserError, match="kd.vllm_server_base_url is not read"):
        load_config(make_config(kd={"method": "on_policy", "generation": "vllm", "vllm_server_base_url": "http://127.0.0.1:8001"}))
    with pytest.raises(UserError, match="kd.generation is not read with kd.method 'none'"):
        load_config(make_config(kd={"generation": "vllm"}))


def test_each_phase_reports_its_seconds_per_step(make_config, scripted):
    cfg = run_to_filter(
        make_config, scripted, kd={"method": "on_policy", "max_steps": 2, "max_new_tokens": 4, "per_device_train_batch_size": 2}
    )
    stats = train(cfg)
    assert stats["sft"]["seconds_per_step"] > 0 and stats["kd"]["seconds_per_step"] > 0


def test_offline_kd_keeps_a_reasoning_teachers_thinking_whole():
    from llmdistill.stages.train.offline_kd import one_answer

    stops = ["\n\nQ:", "\nQuestion:"]
    text = "<think>\nQ: is it 3?\n\nThe answer is 3.\n\nNo, wait.\n</think>\n\nThe answer is 4.\n\nQ: next one"
    assert one_answer(text, stops) == "<think>\nQ: is it 3?\n\nThe answer is 3.\n\nNo, wait.\n</think>\n\nThe answer is 4."
    assert one_answer("The answer is 4.\n\nQ: next", stops) == "The answer is 4."
