import pytest

from llmdistill.errors import UserError
from llmdistill.prompts import PromptRenderer, load_prompt
from tests.conftest import ROOT, build_tokenizer

PROMPT = ROOT / "prompts" / "arithmetic_cot.yaml"


def test_chat_rendering_puts_exemplars_in_earlier_turns():
    t = load_prompt(PROMPT)
    msgs = t.messages("How many?", num_shots=2)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert msgs[1]["content"].startswith(t.instruction) and msgs[-1]["content"] == "Q: How many?"
    assert msgs[2]["content"].endswith("The answer is 7.")


def test_plain_rendering_ends_where_the_model_continues():
    text = load_prompt(PROMPT).plain("How many?", num_shots=1)
    assert text.endswith("Q: How many?\nA:") and "A: Sam starts with 3 apples" in text and "The answer is 26" not in text


def test_renderer_uses_the_tokenizer_chat_template():
    tok = build_tokenizer()
    render = PromptRenderer(load_prompt(PROMPT), tok, num_shots=0)
    assert render.use_chat and render("Why?").endswith("Q: Why?<|im_end|>\n<|im_start|>assistant\n")
    tok.chat_template = None
    assert not PromptRenderer(load_prompt(PROMPT), tok, num_shots=0).use_chat
    with pytest.raises(UserError, match="no chat template"):
        PromptRenderer(load_prompt(PROMPT), tok, num_shots=0, prompt_format="chat")


def test_template_hash_changes_with_content():
    a = load_prompt(PROMPT)
    b = a.model_copy(update={"instruction": a.instruction + "!"})
    assert a.hash != b.hash and len(a.hash) == 12


def test_too_many_shots_and_bad_files(tmp_path):
    with pytest.raises(UserError, match="has 2 exemplars, 5 were asked for"):
        load_prompt(PROMPT).plain("q", num_shots=5)
    (tmp_path / "p.yaml").write_text("name: x\nexemplar: []\n")
    with pytest.raises(UserError, match="exemplar"):
        load_prompt(tmp_path / "p.yaml")
    with pytest.raises(UserError, match="prompt file not found"):
        load_prompt(tmp_path / "missing.yaml")


def test_an_empty_system_prompt_replaces_the_chat_templates_default():
    """system unset: no system turn (the chat template may add its default); system "": an empty
    system turn, which drops that default from every example."""
    t = load_prompt(PROMPT)
    unset, empty = t.model_copy(update={"system": None}), t.model_copy(update={"system": ""})
    assert unset.messages("How many?", num_shots=0)[0]["role"] == "user"
    assert empty.messages("How many?", num_shots=0)[0] == {"role": "system", "content": ""}
