"""The teacher on a real vLLM server against the same teacher in this process (issue 28).

SmolLM2-135M-Instruct is served by vLLM's OpenAI-compatible server on this machine
(``--max-logprobs K``); its depth-pruned copy (every other layer) is the student. On-policy KD
steps run with the server teacher (``kd.teacher_server``), and on every step's batch the script also
scores the same student completions with the teacher loaded in this process, two ways: its top-k
(the server's loss, computed locally) and its full distribution (TRL's dense loss). So each step
gives three losses on one batch:

- ``server_topk`` - ``local_topk``: the server path's error (transport, vLLM's numerics);
- ``local_dense`` - ``local_topk``: what keeping only the top k costs (the tail bucket's approximation).

Then the per-step time of each teacher, measured apart: the same number of steps with the server
teacher and with TRL's in-process ``DistillationTrainer``.

    .venv/bin/python scripts/check_server_teacher.py [--steps 5] [--top-k 20] [--out runs/check_server_teacher]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def serve(model: str, port: int, top_k: int, log: Path) -> subprocess.Popen:
    import httpx

    env = {
        **os.environ,
        "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "0-1"),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    }
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name", "teacher",
           "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "2048",
           "--gpu-memory-utilization", "0.08", "--enforce-eager", "--max-logprobs", str(top_k)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"vllm server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(1)
    proc.kill()
    raise SystemExit("vllm server did not start in 300 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("--port", type=int, default=8431)
    ap.add_argument("--ks", type=int, nargs="+", default=[100, 1000], help="larger k, in process only: how the truncation gap closes")
    ap.add_argument("--out", default=str(ROOT / "runs" / "check_server_teacher"))
    a = ap.parse_args()

    import datasets
    import torch
    from fetch_smollm2 import fetch
    from transformers import AutoModelForCausalLM
    from trl.trainer.distillation_trainer import _chunked_divergence_loss

    from llmdistill.backends.transformers import load_tokenizer
    from llmdistill.config import Config
    from llmdistill.config.train import TeacherServerConfig
    from llmdistill.prompts import PromptRenderer, load_prompt
    from llmdistill.stages.train import distill
    from llmdistill.stages.train.args import trl_class
    from llmdistill.stages.train.onpolicy import served_teacher
    from llmdistill.student import layers_to_keep, prune_depth

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    teacher_path = str(fetch(ROOT / "models" / "SmolLM2-135M-Instruct"))
    student_path = out / "student"
    if not (student_path / "config.json").exists():
        full = AutoModelForCausalLM.from_pretrained(teacher_path, dtype=torch.float32)
        prune_depth(full, layers_to_keep(full.config.num_hidden_layers, "every_other")).save_pretrained(student_path)
        load_tokenizer(teacher_path).save_pretrained(student_path)
    tok = load_tokenizer(str(student_path))
    questions = [json.loads(line)["question"] for line in (ROOT / "data" / "quickstart" / "train.jsonl").read_text().splitlines()]
    render = PromptRenderer(load_prompt(str(ROOT / "prompts" / "arithmetic_cot.yaml")), tok, 1, "auto")
    dataset = datasets.Dataset.from_list([{"prompt": render(q, "cot")} for q in questions[: 4 * a.steps]])
    cfg = Config.model_validate({"output_dir": str(out), "data": {"path": "unused"}, "teacher": {"model_name_or_path": teacher_path}})

    def args(name: str):
        from llmdistill.stages.train.args import shared_args

        return trl_class("DistillationConfig")(
            **{**shared_args(cfg, str(out / name), 0), "logging_steps": 1, "seed": 0},
            learning_rate=1e-5,
            max_steps=a.steps,
            per_device_train_batch_size=4,
            beta=a.beta,
            temperature=1.0,
            max_completion_length=48,
        )

    teacher = AutoModelForCausalLM.from_pretrained(teacher_path, dtype=torch.float32).eval()
    local = distill.LocalTopK(teacher, max(a.top_k, *a.ks))
    server_log = out / "vllm-server.log"
    proc = serve(teacher_path, a.port, a.top_k, server_log)
    rows: list[dict] = []
    timing: dict[str, dict] = {}
    try:
        backend = served_teacher(TeacherServerConfig(base_url=f"http://127.0.0.1:{a.port}/v1", concurrency=4))

        def run(name: str, diagnose: bool):
            server = distill.ServerTopK(backend, a.top_k)
            student = AutoModelForCausalLM.from_pretrained(str(student_path), dtype=torch.float32)
            trainer = distill.server_teacher_trainer(
                teacher=server, shared=len(tok), model=student, args=args(name), train_dataset=dataset, processing_class=tok
            )
            if diagnose:

                def check(s_logp, inputs, loss):
                    seqs, starts = distill.sequences_of(inputs)
                    width, mask = inputs["completion_ids"].size(1), inputs["completion_mask"]
                    ids, lps = local(seqs, starts, width)  # sorted by probability: each k is a prefix

                    def at(k: int) -> float:
                        return float((distill.topk_divergence(s_logp, ids[..., :k], lps[..., :k], a.beta) * mask).sum() / mask.sum())

                    with torch.no_grad():
                        full = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
                        att = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
                        h_t = trainer._get_last_hidden_state(teacher, full, att, width)
                        h_s = trainer._get_last_hidden_state(trainer.model, full, att, width)
                        dense, _, _ = _chunked_divergence_loss(
                            h_s, h_t, trainer.model.get_output_embeddings().weight, teacher.get_output_embeddings().weight, mask, a.beta
                        )
                    rows.append(
                        {
                            "step": len(rows) + 1,
                            "tokens": int(mask.sum()),
                            "server_topk": float(loss),
                            "local_topk": at(a.top_k),
                            **{f"local_top{k}": at(k) for k in a.ks},
                            "local_dense": float(dense),
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)

                trainer.diagnose = check
            t0 = time.perf_counter()
            trainer.train()
            timing[name] = {"steps": a.steps, "seconds_per_step": round((time.perf_counter() - t0) / a.steps, 2)}
            server.close()

        run("server_diagnosed", diagnose=True)
        run("server", diagnose=False)
        student = AutoModelForCausalLM.from_pretrained(str(student_path), dtype=torch.float32)
        inproc = trl_class("DistillationTrainer")(
            model=student, teacher_model=teacher, args=args("in_process"), train_dataset=dataset, processing_class=tok
        )
        t0 = time.perf_counter()
        inproc.train()
        timing["in_process"] = {"steps": a.steps, "seconds_per_step": round((time.perf_counter() - t0) / a.steps, 2)}
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    server_err = max(abs(r["server_topk"] - r["local_topk"]) / r["local_topk"] for r in rows)
    trunc = max(abs(r["local_dense"] - r["local_topk"]) / r["local_dense"] for r in rows)
    trunc_k = {k: round(max(abs(r["local_dense"] - r[f"local_top{k}"]) / r["local_dense"] for r in rows), 4) for k in a.ks}
    result = {
        "teacher": teacher_path,
        "student": "SmolLM2-135M pruned to every other layer",
        "top_k": a.top_k,
        "beta": a.beta,
        "steps": rows,
        "max_relative_server_vs_local_topk": round(server_err, 6),
        "max_relative_topk_vs_dense": round(trunc, 6),
        "max_relative_topk_vs_dense_at_larger_k": trunc_k,
        "timing": timing,
        "machine": f"{os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d"),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "steps"}, indent=2))


if __name__ == "__main__":
    main()
