"""Cases on which generate must write what it wrote before it streamed (issue 29): run one with
``llmdistill generate`` and reduce its traces and stats to what must not change.

    python tests/stages/generate/scale_cases.py OUT_DIR    # every case's result, as JSON on stdout
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
VOLATILE = {"created_at"}  # per row
STATS = ("problems", "traces", "rationalized", "prompt_tokens", "completion_tokens", "finish_reasons", "problems_this_run", "data")


def digest(path: Path) -> dict:
    """The traces, sorted by (id, sample), without their timestamps: a hash and the count."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = sorted(({k: v for k, v in r.items() if k not in VOLATILE} for r in rows), key=lambda r: (r["id"], r["sample"]))
    text = "\n".join(json.dumps(r, sort_keys=True) for r in rows)
    return {"rows": len(rows), "sha256": hashlib.sha256(text.encode()).hexdigest()}


def config(name: str, out: Path) -> tuple[Path, list[str]]:
    """(config file, --set overrides) of a case."""
    if name == "svamp":
        return ROOT / "configs" / "svamp_palm.yaml", [f"output_dir={out}"]
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench_scale

    split = out.parent / "synthetic-split"
    bench_scale.make_split(3000, split)
    sets = [
        f"output_dir={out}",
        f"data.path={split}",
        "data.question_field=input",
        "data.answer_field=label",
        "teacher.model_name_or_path=PaLM-540B",
        "teacher.backend=bench_scale:PalmTeacher",
        "teacher.batch_size=64",
        "teacher.replay={}",
        "generate.n=2",
        "generate.temperature=0.7",
        "generate.rationalize=true",
    ]
    return ROOT / "configs" / "svamp_palm.yaml", sets


def command(name: str, out: Path, spill: int | None = None) -> list[str]:
    """``llmdistill generate`` on the case; ``spill``: records held before the stage's hashes go to
    disk (``llmdistill.buckets.SPILL``), small to make a small case take the on-disk path."""
    cfg, sets = config(name, out)
    cli = ["-m", "llmdistill"]
    if spill is not None:
        cli = [
            "-c",
            f"import sys, llmdistill.buckets as b; b.SPILL = {spill}; from llmdistill.cli import app; sys.argv[0] = 'llmdistill'; app()",
        ]
    return [sys.executable, *cli, "generate", str(cfg), *(a for s in sets for a in ("--set", s))]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'scripts'}:{ROOT}"}


def result(out: Path) -> dict:
    stats = json.loads((out / "generate" / "stats.json").read_text())
    return {"traces": digest(out / "generate" / "traces.jsonl"), "stats": {k: stats[k] for k in STATS if k != "problems_this_run"}}


def run(name: str, out: Path, spill: int | None = None) -> dict:
    subprocess.run(command(name, out, spill), cwd=ROOT, env=env(), check=True, capture_output=True, timeout=900)
    return result(out)


if __name__ == "__main__":
    base = Path(sys.argv[1])
    print(json.dumps({name: run(name, base / name / "run") for name in ("svamp", "synthetic")}, indent=2, sort_keys=True))
