"""Every stage at scale: wall time and peak resident memory of each stage's own process.

A synthetic train split of SVAMP's 700 problems repeated with fresh ids (``s<k>``), PaLM-540B's
completions replayed as the teacher (``PalmTeacher`` below, a plugin backend named by its path: it
holds the 700 completions, not one per problem, so the stage's own memory is what is measured),
then, each in a process of its own (``python -m llmdistill ...``):

- ``generate``: the whole split;
- ``resume half``: a generate SIGKILLed once half the traces are on disk, then run again;
- ``resume done``: generate again on the finished file (indexing N traces, nothing to ask);
- ``filter`` (the SVAMP recipe's filters), ``export`` (parquet);
- ``train``: the train stage through its first step with a tiny model (SmolLM2's tokenizer, 2 layers),
  on generate's traces filtered without dedup (``bench_train``: the repeated split would dedup to 597).

    python scripts/bench_scale.py [--sizes 200000 1000000 2000000] [--stages generate resume filter export train] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmdistill.backends import Backend, Completion, Request, SamplingParams  # noqa: E402

SVAMP = ROOT / "data" / "svamp"


class PalmTeacher(Backend):
    """PaLM-540B's SVAMP train completions, by the problem's row modulo 700 (the split repeats SVAMP)."""

    name = "palm-replay"

    def __init__(self, model_name_or_path: str, **_):
        self.model_name = model_name_or_path
        self.texts = [t for f in ("train_CoT_0.json", "train_CoT_1.json") for t in json.loads((SVAMP / "palm" / f).read_text())]

    def generate(self, requests: list[Request], params: SamplingParams) -> list[list[Completion]]:
        out = []
        for r in requests:
            text = self.texts[r.index % len(self.texts)]
            one = Completion(text=text, finish_reason="unknown", prompt_tokens=len(str(r.prompt)) // 4, completion_tokens=len(text) // 4)
            out.append([one] * params.n)
        return out


def make_split(n: int, folder: Path) -> None:
    """``train.jsonl``: ``n`` problems, SVAMP's train problems in order, repeated; ``test.jsonl``: SVAMP's test."""
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "train.jsonl").exists() and sum(1 for _ in (folder / "train.jsonl").open()) == n:
        return
    base = [json.loads(line) for line in (SVAMP / "svamp_train.json").read_text().splitlines()]
    with (folder / "train.jsonl").open("w") as f:
        for k in range(n):
            row = base[k % len(base)]
            f.write(json.dumps({"id": f"s{k}", "input": row["input"], "label": row["label"]}) + "\n")
    test = [json.loads(line) for line in (SVAMP / "svamp_test.json").read_text().splitlines()]
    (folder / "test.jsonl").write_text("".join(json.dumps({"id": f"t{k}", **r}) + "\n" for k, r in enumerate(test)))


def tiny_student(folder: Path) -> str:
    """A 2-layer Llama with SmolLM2's tokenizer: the train stage's data path, not its model, is measured."""
    if (folder / "config.json").exists():
        return str(folder)
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(ROOT / "scripts"))
    from fetch_smollm2 import fetch

    tok = AutoTokenizer.from_pretrained(fetch(ROOT / "models" / "SmolLM2-135M-Instruct"))
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, tie_word_embeddings=True)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def write_config(work: Path, split: Path, student: str) -> Path:
    cfg = {
        "output_dir": str(work / "run"),
        "data": {"path": str(split), "question_field": "input", "answer_field": "label", "prompt": str(ROOT / "prompts" / "arithmetic_cot.yaml"), "num_shots": 2},
        "teacher": {"model_name_or_path": "PaLM-540B", "backend": "bench_scale:PalmTeacher", "batch_size": 256},
        "generate": {"n": 1, "temperature": 0.0},
        "filter": {"order": ["truncated", "parse", "correct", "length", "degenerate", "dedup_exact", "dedup_near"]},
        "student": {"init": "pretrained", "model_name_or_path": student},
        "train": {"mode": "step_by_step", "max_steps": 1, "per_device_train_batch_size": 1, "max_length": 512, "preflight_probe": False,
                  "on_overlength": "drop"},
        "export": {"format": "parquet", "to": str(work / "export"), "views": ["step_by_step"]},
    }  # fmt: skip
    import yaml

    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# The train stage's input. The recipe's dedup filters would keep 597 traces of the repeated split
# (its problems are SVAMP's 700, over and over), so the train benchmark filters without them: every
# problem the teacher answers right is a kept trace. Its config is the recipe's (configs/quickstart.yaml):
# step-by-step on gold equations for every problem, zero-shot prompts, length-grouped batches; one
# problem a step, so the step's activations (logits over a 49k vocabulary) stay out of the data path's peak.
TRAIN_FILTERS = ["truncated", "parse", "correct", "length", "degenerate"]
TRAIN = {"mode": "step_by_step", "label_source": "gold", "gold_label": "as_written", "num_shots": 0, "group_by_length": True,
         "max_steps": 1, "per_device_train_batch_size": 1, "max_length": 512, "on_overlength": "drop", "preflight_probe": False}  # fmt: skip


def bench_train(run: Path, config: Path) -> dict:
    """The train stage through its first step on ``run/generate``'s traces, filtered without dedup in
    a folder of its own (``run/train-run``: the generate folder linked, filter run once, not timed)."""
    import yaml

    generate = run / "run" / "generate"
    if not (generate / "stats.json").is_file():
        raise SystemExit(f"{generate}: no generate output (run --stages generate first)")
    cfg = yaml.safe_load(config.read_text())
    out_dir = run / "train-run"
    cfg |= {"output_dir": str(out_dir), "filter": {"order": TRAIN_FILTERS}, "train": TRAIN}
    path = run / "config-train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out_dir.mkdir(exist_ok=True)
    if not (out_dir / "generate").exists():
        (out_dir / "generate").symlink_to(generate.resolve(), target_is_directory=True)
    if not (out_dir / "filter" / "stats.json").is_file():
        run_stage(["filter", str(path)])
    peaks = RssParts(f"-m llmdistill train {path}")
    stats = run_stage(["train", str(path), "--overwrite"], kill_when=peaks.sample, poll_s=0.1)
    train = json.loads((out_dir / "train" / "stats.json").read_text())
    return {**stats, **peaks.mib(), "kept_traces": lines(out_dir / "filter" / "kept.jsonl"), "examples": train["examples"]}


class RssParts:
    """Peaks of a process's anonymous and file-backed resident memory, sampled from /proc (a
    ``kill_when`` that never kills). File-backed pages are memory-mapped files (the Arrow sets,
    the libraries): page cache the kernel takes back when it needs it, unlike anonymous memory."""

    def __init__(self, cmdline: str):
        self.cmdline, self.pid, self.anon, self.file = cmdline.encode(), None, 0, 0

    def _find(self) -> None:
        for proc in Path("/proc").iterdir():
            try:
                args = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if self.cmdline in args and not args.startswith(b"/usr/bin/time"):
                self.pid = proc.name
                return

    def sample(self) -> bool:
        if self.pid is None:
            self._find()
        try:
            status = Path(f"/proc/{self.pid}/status").read_text() if self.pid else ""
        except OSError:
            return False
        fields = dict(line.split(":", 1) for line in status.splitlines() if line.startswith("Rss"))
        self.anon = max(self.anon, int(fields.get("RssAnon", "0 kB").split()[0]))
        self.file = max(self.file, int(fields.get("RssFile", "0 kB").split()[0]))
        return False

    def mib(self) -> dict:
        return {"peak_anon_mib": round(self.anon / 1024), "peak_file_mib": round(self.file / 1024)}


def run_stage(args: list[str], kill_when=None, poll_s: float = 0.05) -> dict:
    """One ``llmdistill`` command in its own process: wall seconds, peak RSS (MiB), whether killed.

    GNU time reports the stage process's own peak: a process forked from this one would start
    with this one's pages counted."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'scripts'}:{ROOT}", "OMP_NUM_THREADS": "2"}
    rss_file = Path(f"/tmp/bench_scale_rss_{os.getpid()}")
    cmd = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), sys.executable, "-m", "llmdistill", *args]
    t0 = time.time()
    log = rss_file.with_suffix(".log").open("w+")  # a file, not a pipe: a pipe nobody reads fills and blocks the stage
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    killed = False
    if kill_when is not None:
        while proc.poll() is None and not kill_when():
            time.sleep(poll_s)
        if proc.poll() is None:
            subprocess.run(["pkill", "-KILL", "-P", str(proc.pid)], check=False)  # the stage, under GNU time
            killed = True
    code = proc.wait()
    log.seek(0)
    text = log.read()
    err = text[-2000:]
    log.close()
    Path(log.name).unlink(missing_ok=True)
    if code != 0 and not killed:
        raise SystemExit(f"llmdistill {' '.join(args)} failed ({code}): {err}")
    seconds = round(time.time() - t0, 1)
    rss = rss_file.read_text().strip().splitlines()[-1] if rss_file.exists() else ""
    rss_file.unlink(missing_ok=True)
    out = {"seconds": seconds, "peak_rss_mib": round(int(rss) / 1024) if rss.isdigit() else None, "killed": killed}
    indexed = re.search(r"indexed in ([0-9.]+) s", text)  # generate's resume: the stage's own timing of its index
    return out | ({"indexed_s": float(indexed.group(1))} if indexed else {})


def lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def bench_size(n: int, stages: list[str], work: Path) -> dict:
    split = work / f"split-{n}"
    make_split(n, split)
    run = work / f"run-{n}"
    run.mkdir(parents=True, exist_ok=True)
    config = write_config(run, split, tiny_student(work / "tiny-student"))
    out: dict[str, dict] = {}

    if "generate" in stages:  # a fresh folder: every trace asked for
        shutil.rmtree(run / "run", ignore_errors=True)
        out["generate"] = run_stage(["generate", str(config)])
        out["generate"]["traces_per_s"] = round(n / out["generate"]["seconds"])
    for stage in ("filter", "export"):
        if stage in stages:
            out[stage] = run_stage([stage, str(config)])
    if "train" in stages:
        out["train"] = bench_train(run, config)
    if "resume" in stages:  # another folder: half written, SIGKILLed, then resumed; then resumed once more with nothing to ask
        resumed = ["--set", f"output_dir={run / 'resume'}"]
        shutil.rmtree(run / "resume", ignore_errors=True)
        partial = run / "resume" / "generate" / "traces.jsonl"
        # killed once the file is half the size of the whole run's (counting lines of a GB file
        # every poll would cost the machine more than the stage)
        full = run / "run" / "generate" / "traces.jsonl"
        whole = full.stat().st_size if full.exists() else n * 1800
        first = run_stage(
            ["generate", str(config), *resumed], kill_when=lambda: partial.exists() and partial.stat().st_size >= whole // 2, poll_s=0.5
        )
        at_kill = lines(partial) if first["killed"] else None
        out["resume half"] = {**run_stage(["generate", str(config), *resumed]), "traces_at_kill": at_kill}
        out["resume done"] = run_stage(["generate", str(config), *resumed])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[200000, 1000000, 2000000])
    ap.add_argument("--stages", nargs="+", default=["resume", "generate", "filter", "export", "train"])
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench_scale"))
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    results = {"date": str(date.today()), "machine": f"{os.cpu_count()} CPUs, {platform.machine()}", "sizes": {}}
    for n in a.sizes:
        results["sizes"][n] = bench_size(n, a.stages, work)
        print(json.dumps({n: results["sizes"][n]}), flush=True)
        if a.json:
            Path(a.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
