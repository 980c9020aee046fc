import torch
from safetensors.torch import load_file

from llmdistill.config.file import load_config
from llmdistill.jsonl import read_rows
from llmdistill.outputs import stage_dir
from llmdistill.records import TrainExample
from llmdistill.stages.filter.run import filter_traces
from llmdistill.stages.generate.run import generate
from llmdistill.stages.train import train
from llmdistill.stages.train.trainers import make_trainer
from tests.conftest import correct_script


def test_loss_covers_the_completion_only(make_config, scripted, tiny_model, tmp_path):
    cfg = load_config(make_config())
    ex = TrainExample(
        id="a", prompt="<|im_start|>user\nQ: Sam has 3 apples.<|im_end|>\n<|im_start|>assistant\n", completion="3 + 4 = 7. The answer is 7."
    )
    trainer = make_trainer(cfg, tiny_model, [ex], str(tmp_path / "ckpt"))
    batch = next(iter(trainer.get_train_dataloader()))
    tok = trainer.processing_class
    labels = batch["labels"][0]
    target = labels[labels != -100]
    assert tok.decode(target) == ex.completion + tok.eos_token  # EOS appended, prompt masked
    n_prompt = len(tok(ex.prompt, add_special_tokens=False)["input_ids"])
    assert (labels[:n_prompt] == -100).all()


def test_two_steps_change_the_weights_and_save_a_loadable_student(make_config, scripted):
    scripted.SCRIPT = correct_script()
    cfg = load_config(make_config())
    generate(cfg)
    filter_traces(cfg)
    stats = train(cfg)
    assert stats["steps"] == 2 and stats["examples"] == 6 and stats["tokens_seen"] > 0
    before = load_file(stage_dir(cfg, "train") / "init" / "model.safetensors")
    after = load_file(stage_dir(cfg, "train") / "model" / "model.safetensors")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(stage_dir(cfg, "train") / "model")
    assert model.config.num_hidden_layers == 2
    examples = read_rows(stage_dir(cfg, "train") / "examples.jsonl", TrainExample)
    assert examples[0].completion == "Sam has 0 + 2 = 2 apples. The answer is 2."
