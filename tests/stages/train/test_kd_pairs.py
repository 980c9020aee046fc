"""Logit distillation for the pairs people distil: one tokenizer with padded embedding rows,
different tokenizers (GOLD's ULD), and a teacher on its own vLLM server (top-k log-probabilities)."""

from __future__ import annotations

import json

import pytest
import torch

from llmdistill.errors import UserError
from llmdistill.stages.train import train
from llmdistill.stages.train.distill import LocalTopK, ServerTopK, generalized_jsd, sequences_of, topk_divergence
from llmdistill.stages.train.vocab import token_ids, vocab_pair
from tests.conftest import ROOT, build_tokenizer, run_to_filter, save_tiny_llama

KD = {"method": "on_policy", "after_sft": False, "max_steps": 2, "max_new_tokens": 8, "per_device_train_batch_size": 2}


def padded_copy(src: str, dst, extra: int = 64) -> str:
    """``src`` with ``extra`` embedding rows past its tokenizer's ids, as Qwen2.5-7B's 152,064 rows
    against 0.5B's 151,936: rows no token uses, here given weight so that leaving them in would show."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src)
    n = model.get_output_embeddings().weight.shape[0]
    model.resize_token_embeddings(n + extra, mean_resizing=False)
    with torch.no_grad():
        torch.manual_seed(1)
        model.get_output_embeddings().weight[n:] = 3 * torch.randn(extra, model.config.hidden_size)
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return str(dst)


def _kd_losses(stats: dict) -> list[float]:
    return [h["loss"] for h in stats["kd"]["log_history"] if "loss" in h]


def test_the_pair_kinds(tiny_model, tmp_path):
    padded = padded_copy(tiny_model, tmp_path / "padded")
    other = save_tiny_llama(tmp_path / "other", 16, 2, 2, 1, tokenizer=_other_tokenizer())
    n = token_ids(build_tokenizer())
    assert vocab_pair(tiny_model, tiny_model).kind == "same"
    assert (vocab_pair(tiny_model, padded).kind, vocab_pair(tiny_model, padded).shared) == ("padded", n)
    assert (vocab_pair(padded, tiny_model).kind, vocab_pair(padded, tiny_model).shared) == ("padded", n)
    assert vocab_pair(tiny_model, other).kind == "cross"


def test_a_padded_teacher_gives_exactly_the_unpadded_pair_s_loss(make_config, scripted, tiny_model, tmp_path):
    """The same student, the same seed, the teacher with and without 64 padding rows: every KD step's loss is equal."""
    from transformers import AutoModelForCausalLM

    padded = padded_copy(tiny_model, tmp_path / "padded")
    teacher = AutoModelForCausalLM.from_pretrained(padded)
    probe = torch.softmax(teacher(torch.tensor([[5, 6, 7]])).logits[0, -1], -1)
    n = token_ids(build_tokenizer())
    assert probe[n:].sum() > 0.2  # the padding rows would carry real mass if they were left in the loss
    losses = {}
    for name, path in (("unpadded", tiny_model), ("padded", padded)):
        cfg = run_to_filter(make_config, scripted, kd={**KD, "teacher": path})
        stats = train(cfg, overwrite=True)
        assert stats["kd"]["pair"] == ("same" if name == "unpadded" else "padded") and stats["kd"]["shared_ids"] == n
        losses[name] = _kd_losses(stats)
    assert len(losses["padded"]) == 2 and losses["padded"] == losses["unpadded"]


def test_offline_top_k_with_a_padded_student(make_config, scripted, tiny_model, tmp_path):
    """The stored teacher ids index the tokenizer; the student's padding rows are left out of the KL."""
    padded = padded_copy(tiny_model, tmp_path / "padded")
    cfg = run_to_filter(
        make_config,
        scripted,
        teacher={"backend": "tests.stages.train.test_kd:LogprobBackend"},
        generate={"logprobs": 3},
        student={"init": "pretrained", "model_name_or_path": padded},
        kd={"method": "offline_topk", "lam": 0.5},
    )
    stats = train(cfg)
    assert stats["sft"]["preflight"]["offline_topk"]["pair"] == "padded" and stats["steps"] == 2
    assert all(h["topk_kl"] > 0 for h in stats["sft"]["log_history"] if "topk_kl" in h)


def _other_tokenizer():
    """A byte-level BPE trained on another corpus (SVAMP's questions): it splits the same text differently."""
    rows = [json.loads(line) for line in (ROOT / "data" / "svamp" / "svamp_train.json").read_text().splitlines()[:300]]
    return build_tokenizer(vocab_size=350, corpus=[" ".join(str(v) for v in r.values()) for r in rows])


def test_different_tokenizers_distil_with_gold(make_config, scripted, tmp_path):
    """A student with another tokenizer: on-policy KD runs GOLD's ULD (hybrid) end to end."""
    other = save_tiny_llama(tmp_path / "other", 16, 2, 2, 1, tokenizer=_other_tokenizer())
    text = "Sam has 12 apples and gets 2 more."
    assert build_tokenizer().tokenize(text) != _other_tokenizer().tokenize(text)  # the two split the same text differently
    cfg = run_to_filter(make_config, scripted, student={"init": "pretrained", "model_name_or_path": other}, kd=KD)
    stats = train(cfg)
    assert stats["kd"]["pair"] == "cross" and stats["kd"]["loss"] == "uld_hybrid" and stats["kd"]["steps"] == 2
    assert all(torch.isfinite(torch.tensor(x)) for x in _kd_losses(stats))


def test_offline_top_k_across_tokenizers_is_refused_in_one_line(make_config, scripted, tmp_path):
    other = save_tiny_llama(tmp_path / "other", 16, 2, 2, 1, tokenizer=_other_tokenizer())
    cfg = run_to_filter(
        make_config,
        scripted,
        teacher={"backend": "tests.stages.train.test_kd:LogprobBackend"},
        generate={"logprobs": 3},
        student={"init": "pretrained", "model_name_or_path": other},
        kd={"method": "offline_topk"},
    )
    with pytest.raises(UserError, match="kd.method 'offline_topk' with different tokenizers") as e:
        train(cfg)
    assert "\n" not in str(e.value)


# --- the top-k loss --------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_with_every_token_in_the_top_k_the_loss_is_trl_s_dense_loss(beta):
    from trl.trainer.distillation_trainer import _chunked_divergence_loss

    torch.manual_seed(0)
    h_s, h_t, w_s, w_t = torch.randn(6, 8), torch.randn(6, 8), torch.randn(30, 8), torch.randn(30, 8)
    mask = torch.ones(1, 6)
    dense, _, _ = _chunked_divergence_loss(h_s[None], h_t[None], w_s, w_t, mask, beta)
    s_logp, t_logp = torch.log_softmax(h_s @ w_s.T, -1), torch.log_softmax(h_t @ w_t.T, -1)
    top = t_logp.topk(30, -1)
    ours = topk_divergence(s_logp, top.indices, top.values, beta).mean()
    assert torch.allclose(ours, dense, atol=1e-5)


def test_top_one_by_hand():
    """Teacher (0.7, 0.2, 0.1), student (0.5, 0.3, 0.2), k = 1: buckets {token 0, the rest} =
    (0.7, 0.3) against (0.5, 0.5); forward KL = 0.7 ln(0.7/0.5) + 0.3 ln(0.3/0.5)."""
    s = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    t = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    got = topk_divergence(s, torch.tensor([[0]]), t[:, :1], beta=0.0)
    want = 0.7 * torch.log(torch.tensor(0.7 / 0.5)) + 0.3 * torch.log(torch.tensor(0.3 / 0.5))
    assert torch.allclose(got, want.reshape(1), atol=1e-6)
    # and the generalized JSD at beta 0.5 on the same buckets, by hand
    p, q = torch.tensor([0.7, 0.3]), torch.tensor([0.5, 0.5])
    m = 0.5 * p + 0.5 * q
    jsd = 0.5 * (p * (p / m).log()).sum() + 0.5 * (q * (q / m).log()).sum()
    assert torch.allclose(topk_divergence(s, torch.tensor([[0]]), t[:, :1], beta=0.5), jsd.reshape(1), atol=1e-6)
    assert torch.allclose(generalized_jsd(torch.log(q), torch.log(p), 0.5), jsd, atol=1e-6)


# --- the teacher on a real vLLM server ---------------------------------------------------------


@pytest.mark.slow
def test_the_server_s_top_k_equals_the_same_teacher_in_process(vllm_server):
    """vLLM's OpenAI server (the session's, serving a SmolLM2 the train stage saved) and the same model
    in this process give the same top-k log-probabilities at every completion position."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmdistill.config.train import TeacherServerConfig
    from llmdistill.stages.train.onpolicy import served_teacher

    tok = AutoTokenizer.from_pretrained(vllm_server.model)
    prompt = tok("Q: Sam has 3 apples and gets 2 more. How many apples does Sam have?\nA:")["input_ids"]
    completion = tok(" Sam has 3 + 2 = 5 apples. The answer is 5.")["input_ids"]
    inputs = {
        "prompt_ids": torch.tensor([[tok.eos_token_id] * 2 + prompt]),
        "prompt_mask": torch.tensor([[0, 0] + [1] * len(prompt)]),
        "completion_ids": torch.tensor([[*completion, tok.eos_token_id]]),
        "completion_mask": torch.tensor([[1] * len(completion) + [0]]),
    }
    seqs, starts = sequences_of(inputs)
    assert seqs[0] == prompt + completion and starts == [len(prompt)]
    server = ServerTopK(served_teacher(TeacherServerConfig(base_url=vllm_server.url)), top_k=5)
    try:
        s_ids, s_lp = server(seqs, starts, len(completion) + 1)
    finally:
        server.close()
    l_ids, l_lp = LocalTopK(AutoModelForCausalLM.from_pretrained(vllm_server.model, dtype=torch.float32), 5)(
        seqs, starts, len(completion) + 1
    )
    assert (s_ids[0, -1] == -1).all()  # the padding position holds no teacher tokens
    assert torch.equal(s_ids[0, : len(completion), 0], l_ids[0, : len(completion), 0])  # the same top token everywhere
    assert torch.allclose(s_lp[0, : len(completion)], l_lp[0, : len(completion)], atol=2e-3)


@pytest.mark.slow
def test_on_policy_kd_from_a_teacher_on_a_server(make_config, scripted, smollm2, vllm_server):
    """`llmdistill train` with kd.teacher_server: a pruned SmolLM2 scored by the served SmolLM2."""
    cfg = run_to_filter(
        make_config,
        scripted,
        teacher={"model_name_or_path": smollm2},
        student={"init": "pruned", "keep_layers": [0, 29]},
        kd={**KD, "teacher": smollm2, "teacher_server": {"base_url": vllm_server.url, "top_k": 5}},
    )
    stats = train(cfg)
    assert stats["kd"]["pair"] == "same" and stats["kd"]["loss"] == "generalized_jsd_topk" and stats["kd"]["steps"] == 2
    assert all(x > 0 for x in _kd_losses(stats))


def test_a_server_teacher_with_another_tokenizer_is_refused(make_config, scripted, tmp_path):
    other = save_tiny_llama(tmp_path / "other", 16, 2, 2, 1, tokenizer=_other_tokenizer())
    cfg = run_to_filter(
        make_config,
        scripted,
        student={"init": "pretrained", "model_name_or_path": other},
        kd={**KD, "teacher_server": {"base_url": "http://127.0.0.1:9/v1"}},
    )
    with pytest.raises(UserError, match="kd.teacher_server with different tokenizers"):
        train(cfg)


def test_a_server_teacher_refuses_a_temperature(make_config):
    from llmdistill.config.file import load_config

    with pytest.raises(UserError, match="kd.temperature is not read with kd.teacher_server"):
        load_config(make_config(kd={**KD, "temperature": 0.7, "teacher_server": {"base_url": "http://127.0.0.1:9/v1"}}))


# --- the cross-tokenizer loss (GOLD's ULD, as llmdistill configures it) ---------------------------


def _uld(hybrid: bool, student_tok=None, teacher_tok=None, beta: float = 0.5):
    from trl.experimental.gold import GOLDConfig
    from trl.experimental.gold.gold_trainer import ULDLoss

    args = GOLDConfig(
        output_dir="unused",
        use_cpu=True,
        bf16=False,
        use_uld_loss=True,
        uld_token_merge_strategy="bayesian",
        uld_use_hybrid_loss=hybrid,
        beta=beta,
        report_to="none",
    )
    return ULDLoss(args, student_tokenizer=student_tok, teacher_tokenizer=teacher_tok)


def test_the_cross_tokenizer_loss_by_hand():
    """The completion "ab": the student writes it as two tokens "a", "b", the teacher as one, "ab".
    Aligned by bytes, the group is (a, b) against (ab); the student's group probability is, by the
    chain rule, its distribution at "b" times p("a") = 0.6: (0.05, 0.15, 0.7, 0.1) * 0.6 =
    (0.03, 0.09, 0.42, 0.06); the teacher's is (0.2, 0.5, 0.3). Sorted, zero-padded, L1:
    |0.42 - 0.5| + |0.09 - 0.3| + |0.06 - 0.2| + |0.03 - 0| = 0.46."""
    s_probs = torch.tensor([[0.1, 0.6, 0.2, 0.1], [0.05, 0.15, 0.7, 0.1], [0.25] * 4, [0.25] * 4])  # ids: P, a, b, EOS
    t_probs = torch.tensor([[0.2, 0.5, 0.3], [1 / 3] * 3, [1 / 3] * 3])  # ids: P, ab, EOS
    loss = _uld(hybrid=False)(
        student_logits=s_probs.log()[None],
        teacher_logits=t_probs.log()[None],
        student_labels=torch.tensor([[-100, 1, 2, 3]]),
        teacher_labels=torch.tensor([[-100, 1, 2]]),
        student_input_ids=torch.tensor([[0, 1, 2, 3]]),
        teacher_input_ids=torch.tensor([[0, 1, 2]]),
        student_byte_offsets=torch.tensor([[[0, 0], [0, 1], [1, 2], [2, 2]]]),
        teacher_byte_offsets=torch.tensor([[[0, 0], [0, 2], [2, 2]]]),
    )
    assert torch.allclose(loss, torch.tensor(0.46), atol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_with_one_tokenizer_the_hybrid_cross_tokenizer_loss_is_the_same_tokenizer_loss(beta):
    """Both sides with the same tokenizer: every token is matched, the byte groups are single tokens,
    and the hybrid ULD is the generalized JSD of the same-tokenizer trainer, token by token."""
    tok = build_tokenizer()
    ids = tok(" Sam has 12 apples. The answer is 14.")["input_ids"]
    seq = [tok.bos_token_id, *ids, tok.eos_token_id]
    offsets, at = [[0, 0]], 0
    for i in ids:
        n = len(tok.convert_ids_to_tokens(i))
        offsets.append([at, at + n])
        at += n
    offsets.append([at, at])
    torch.manual_seed(0)
    v = len(tok)
    s_logits, t_logits = torch.randn(1, len(seq), v), torch.randn(1, len(seq), v)
    labels = torch.tensor([[-100, *ids, tok.eos_token_id]])
    loss = _uld(hybrid=True, student_tok=tok, teacher_tok=tok, beta=beta)(
        student_logits=s_logits,
        teacher_logits=t_logits,
        student_labels=labels,
        teacher_labels=labels,
        student_input_ids=torch.tensor([seq]),
        teacher_input_ids=torch.tensor([seq]),
        student_byte_offsets=torch.tensor([offsets]),
        teacher_byte_offsets=torch.tensor([offsets]),
    )
    # bayesian: the distributions at the positions that predict the completion's tokens (EOS skipped)
    rows = slice(0, len(ids))
    want = generalized_jsd(torch.log_softmax(s_logits[0, rows], -1), torch.log_softmax(t_logits[0, rows], -1), beta).mean()
    assert torch.allclose(loss, want, atol=1e-5)


@pytest.mark.slow
def test_a_top_k_the_server_refuses_is_one_line(vllm_server):
    """More log-probabilities than the server's --max-logprobs (vLLM's default 20): HTTP 400, not retried."""
    from llmdistill.config.train import TeacherServerConfig
    from llmdistill.stages.train.onpolicy import served_teacher

    server = ServerTopK(served_teacher(TeacherServerConfig(base_url=vllm_server.url, max_retries=0)), top_k=50)
    try:
        with pytest.raises(UserError, match="refused the request: HTTP 400") as e:
            server([[1, 2, 3, 4]], [2], 2)
    finally:
        server.close()
    assert "\n" not in str(e.value)


def test_an_unreachable_server_is_one_line(make_config, scripted):
    cfg = run_to_filter(make_config, scripted, kd={**KD, "teacher_server": {"base_url": "http://127.0.0.1:9/v1", "max_retries": 0}})
    with pytest.raises(UserError, match=r"http://127.0.0.1:9/v1/models: no served model \(ConnectError") as e:
        train(cfg)
    assert "\n" not in str(e.value)
