import pytest
import torch
from transformers import AutoModelForCausalLM

from llmdistill.errors import UserError
from llmdistill.student import layers_to_keep, prune_depth


def test_layers_to_keep():
    assert layers_to_keep(6, "every_other") == [0, 2, 4]
    assert layers_to_keep(5, "first_half") == [0, 1, 2]
    assert layers_to_keep(6, [5, 0]) == [0, 5]
    for bad in ([6], [1, 1], []):
        with pytest.raises(UserError, match="distinct layer indexes"):
            layers_to_keep(6, bad)


def test_prune_depth_copies_the_kept_layers(tiny_model):
    teacher = AutoModelForCausalLM.from_pretrained(tiny_model)
    student = prune_depth(teacher, [0, 3])
    assert student.config.num_hidden_layers == 2
    assert torch.equal(student.model.layers[1].mlp.up_proj.weight, teacher.model.layers[3].mlp.up_proj.weight)
    assert torch.equal(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight)
    assert student.lm_head.weight.data_ptr() == student.model.embed_tokens.weight.data_ptr()
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())
    ids = torch.tensor([[1, 5, 7, 9]])
    assert student(ids).logits.shape == teacher(ids).logits.shape


def test_pruning_every_layer_reproduces_the_teacher(tiny_model):
    teacher = AutoModelForCausalLM.from_pretrained(tiny_model)
    copy = prune_depth(teacher, list(range(teacher.config.num_hidden_layers)))
    ids = torch.tensor([[1, 5, 7, 9]])
    assert torch.allclose(copy(ids).logits, teacher(ids).logits)
