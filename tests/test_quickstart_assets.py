"""The committed quickstart assets are what their scripts and configs say they are."""

import json
import sys

from llmdistill.config.file import load_config
from llmdistill.prompts import load_prompt
from tests.conftest import ROOT


def test_quickstart_data_is_reproducible_from_its_script():
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_quickstart_data import make

    splits = make(200, 100, seed=0)
    for split, rows in splits.items():
        committed = [json.loads(line) for line in (ROOT / "data" / "quickstart" / f"{split}.jsonl").read_text().splitlines()]
        assert committed == rows
    assert not {r["question"] for r in splits["train"]} & {r["question"] for r in splits["test"]}


def test_every_config_in_configs_validates():
    for path in (ROOT / "configs").glob("*.yaml"):
        cfg = load_config(path)
        assert load_prompt(ROOT / cfg.data.prompt).exemplars
