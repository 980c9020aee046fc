"""Student initialisation: a pretrained model, or a depth-pruned copy of the teacher.

Depth pruning keeps a subset of the teacher's decoder layers (every other one by default), the
way DistilBERT and Minitron initialise students: the copy shares the teacher's tokenizer and
vocabulary, which on-policy and logit distillation need.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Literal

from llmdistill.atomic import atomic_dir
from llmdistill.config import Config
from llmdistill.errors import UserError
from llmdistill.outputs import stage_dir

log = logging.getLogger(__name__)
INIT_MARKER = "llmdistill-init.json"  # in a pruned student's folder: the recipe it was made with


def layers_to_keep(num_layers: int, keep: Literal["every_other", "first_half"] | list[int]) -> list[int]:
    if keep == "every_other":
        return list(range(0, num_layers, 2))
    if keep == "first_half":
        return list(range((num_layers + 1) // 2))
    bad = [i for i in keep if not 0 <= i < num_layers]
    if bad or len(set(keep)) != len(keep) or not keep:
        raise UserError(f"student.keep_layers must be distinct layer indexes in [0, {num_layers}), got {keep}")
    return sorted(keep)


def prune_depth(model, keep: list[int]):
    """A new model with only the decoder layers in ``keep`` (weights copied, renumbered)."""
    from transformers import AutoModelForCausalLM

    config = model.config.__class__.from_dict(model.config.to_dict())
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    new_index = {old: new for new, old in enumerate(keep)}
    state = {}
    for name, tensor in model.state_dict().items():
        m = re.match(r"(.*\.layers\.)(\d+)(\..*)", name)
        if m is None:
            state[name] = tensor
        elif int(m.group(2)) in new_index:
            state[f"{m.group(1)}{new_index[int(m.group(2))]}{m.group(3)}"] = tensor
    student = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    missing, unexpected = student.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:  # a tied lm_head is not in the state dict
        raise RuntimeError(f"depth pruning left weights unmatched: missing={missing} unexpected={unexpected}")
    student.tie_weights()
    student.generation_config = model.generation_config
    return student


def init_path(cfg: Config) -> Path:
    """Where the train stage keeps the pruned student it starts from."""
    return stage_dir(cfg, "train") / "init"


def _recipe(cfg: Config) -> str:
    s = cfg.student
    return json.dumps({"source": s.model_name_or_path or cfg.teacher.model_name_or_path, "keep_layers": s.keep_layers})


def has_student(folder: Path, cfg: Config) -> bool:
    """Whether ``folder`` holds the pruned student of this config's recipe."""
    marker = folder / INIT_MARKER
    return marker.is_file() and marker.read_text() == _recipe(cfg)


def materialize_student(cfg: Config, out: Path) -> str:
    """Path of the untrained student: the pretrained id/path, or a pruned copy saved in ``out``
    (each stage builds it in its own folder: train under ``train/init``, evaluate in its own)."""
    s = cfg.student
    if s.init == "pretrained":
        assert s.model_name_or_path is not None  # required with init 'pretrained' (StudentConfig)
        return s.model_name_or_path
    if has_student(out, cfg):
        return str(out)
    from llmdistill.backends.transformers import load_model, load_tokenizer

    source = s.model_name_or_path or cfg.teacher.model_name_or_path
    teacher = load_model(source, dtype="float32", device="cpu")
    keep = layers_to_keep(teacher.config.num_hidden_layers, s.keep_layers)
    student = prune_depth(teacher, keep)
    with atomic_dir(out, kind="student_init") as tmp:  # replaces a copy of another recipe once this one is whole
        student.save_pretrained(tmp)
        load_tokenizer(source).save_pretrained(tmp)
        (tmp / INIT_MARKER).write_text(_recipe(cfg))
    log.info("depth-pruned %s: kept layers %s of %d -> %s", source, keep, teacher.config.num_hidden_layers, out)
    return str(out)
