"""The training losses against hand-computed and dense references."""

import math

import pytest
import torch

from llmdistill.stages.train.losses import per_example_mean, step_by_step_loss, topk_kl


def test_per_example_mean_ignores_masked_tokens():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[0, 1, 1], [1, 0, 0]])
    assert per_example_mean(loss, mask).tolist() == [2.5, 4.0]


def test_step_by_step_weights_tasks_not_tokens():
    # Two label examples (losses 1 and 3) and two rationale examples (losses 10 and 20).
    ex = torch.tensor([1.0, 10.0, 3.0, 20.0])
    task = torch.tensor([0, 1, 0, 1])
    assert step_by_step_loss(ex, task, 0.5).item() == pytest.approx(0.5 * 2 + 0.5 * 15)
    assert step_by_step_loss(ex, task, 0.8).item() == pytest.approx(0.8 * 2 + 0.2 * 15)
    assert step_by_step_loss(ex, task, 1.0).item() == pytest.approx(2.0)
    # A batch with one task only: that task's weighted mean, nothing borrowed from the other.
    assert step_by_step_loss(ex[[1, 3]], task[[1, 3]], 0.5).item() == pytest.approx(7.5)


def test_topk_kl_equals_dense_kl_when_k_is_the_vocabulary():
    torch.manual_seed(0)
    V = 11
    student = torch.randn(3, 5, V)
    teacher_logp = torch.log_softmax(torch.randn(3, 5, V), -1)
    ids = torch.arange(V).expand(3, 5, V).clone()
    perm = torch.randperm(V)  # any order of the top-k list
    got = topk_kl(student, ids[..., perm], teacher_logp[..., perm])
    dense = (teacher_logp.exp() * (teacher_logp - torch.log_softmax(student, -1))).sum(-1)
    torch.testing.assert_close(got, dense, atol=1e-5, rtol=1e-5)


def test_topk_kl_tail_bucket_by_hand():
    student = torch.log(torch.tensor([0.5, 0.3, 0.1, 0.1]))  # logits = log-probs
    ids = torch.tensor([0, 2])
    logp = torch.log(torch.tensor([0.6, 0.3]))  # teacher tail: 0.1
    q_tail = 1 - 0.5 - 0.1
    want = 0.6 * math.log(0.6 / 0.5) + 0.3 * math.log(0.3 / 0.1) + 0.1 * math.log(0.1 / q_tail)
    assert topk_kl(student, ids, logp).item() == pytest.approx(want, rel=1e-5)
    # padding entries (-1) are ignored
    padded = topk_kl(student, torch.tensor([0, 2, -1]), torch.log(torch.tensor([0.6, 0.3, 1.0])))
    assert padded.item() == pytest.approx(want, rel=1e-5)


def test_topk_kl_is_zero_when_the_student_matches():
    logits = torch.randn(7)
    logp = torch.log_softmax(logits, -1)
    top = logp.topk(3)
    assert topk_kl(logits, top.indices, top.values).item() == pytest.approx(0.0, abs=1e-6)
