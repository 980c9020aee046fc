"""Stage 4, evaluate: every configured model answers the test split with the same prompt,
the same decoding settings and the same answer checker, and the report compares them.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

from tqdm.auto import tqdm

from llmdistill.answers import parse_completion
from llmdistill.backends import Backend, Request, SamplingParams, get_backend
from llmdistill.config import Config
from llmdistill.data import load_problems
from llmdistill.jsonl import write_rows
from llmdistill.generate import teacher_backend
from llmdistill.prompts import build_prompt, load_prompt, wants_chat
from llmdistill.records import EvalResult, Problem
from llmdistill.report import write_report
from llmdistill.stage import StageRun, require_complete
from llmdistill.student import materialize_student
from llmdistill.tasks import check_answer
from llmdistill.train_data import student_shots, student_task

log = logging.getLogger(__name__)


def model_paths(cfg: Config) -> dict[str, str]:
    paths = {}
    for name in cfg.evaluate.models:
        if name == "teacher":
            paths[name] = cfg.teacher.model_name_or_path
        elif name == "student_init":
            paths[name] = materialize_student(cfg)
        else:
            paths[name] = str(cfg.stage_dir("train") / "model")
    return paths


def disk_size(path: str) -> int | None:
    p = Path(path)
    if not p.is_dir():
        return None
    return sum(f.stat().st_size for f in p.glob("*") if f.suffix in (".safetensors", ".bin", ".pt"))


def prompt_for(cfg: Config, name: str) -> tuple[str, int | None]:
    """(task, shots) a model is asked with: the teacher's few-shot CoT prompt, or the prompt the
    student is trained on (and its untrained copy asked the same way, for a fair before/after)."""
    if name == "teacher":
        return "cot", cfg.data.num_shots
    return student_task(cfg), student_shots(cfg)


def answer_all(cfg: Config, name: str, backend: Backend, problems: list[Problem]) -> list[EvalResult]:
    template = load_prompt(cfg.data.prompt)
    task, shots = prompt_for(cfg, name)
    chat = wants_chat(cfg.data.prompt_format, backend.supports_chat)
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=cfg.evaluate.max_new_tokens, stop=template.stop)
    results, bs = [], cfg.evaluate.batch_size
    for start in tqdm(range(0, len(problems), bs), desc=f"evaluate {name}", unit="batch"):
        chunk = problems[start : start + bs]
        requests = [Request(id=p.id, index=start + i, prompt=build_prompt(template, p.question, shots, chat, task=task)) for i, p in enumerate(chunk)]
        outs = backend.generate(requests, params)
        for p, (c,) in zip(chunk, outs):
            parsed = parse_completion(c.text, template.stop, cfg.data.answer_regex)
            verdict, _, _ = check_answer(parsed.answer, p, cfg.data)
            results.append(EvalResult(
                id=p.id, model=name, question=p.question, gold=p.answer, output=c.text, pred=parsed.answer, verdict=verdict,
                finish_reason=c.finish_reason, prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens, latency_s=c.latency_s,
            ))
    return results


def summarize(results: list[EvalResult], params: int, size: int | None, seconds: float) -> dict:
    v = Counter(r.verdict for r in results)
    labelled = len(results) - v["unlabeled"]
    out_tokens = sum(r.completion_tokens for r in results)
    return {
        "n": len(results),
        "correct": v["correct"],
        "wrong": v["wrong"],
        "unparseable": v["unparseable"],
        "accuracy": round(v["correct"] / labelled, 4) if labelled else None,
        "parameters": params,
        "size_bytes": size,
        "prompt_tokens_per_problem": round(sum(r.prompt_tokens for r in results) / max(len(results), 1), 1),
        "output_tokens_per_problem": round(out_tokens / max(len(results), 1), 1),
        "latency_s_per_problem": round(sum(r.latency_s for r in results) / max(len(results), 1), 4),
        "output_tokens_per_s": round(out_tokens / max(seconds, 1e-9), 1),
        "seconds": round(seconds, 2),
    }


def evaluate(cfg: Config, backends: dict[str, Backend] | None = None) -> dict:
    """Evaluate each model in ``evaluate.models``; ``backends`` lets tests inject models by name."""
    if "student" in cfg.evaluate.models:
        require_complete(cfg, "train")
    with StageRun(cfg, "evaluate") as run:
        problems = load_problems(cfg.data, cfg.data.test_split)
        all_results, models = [], {}
        for name, path in model_paths(cfg).items():
            backend = (backends or {}).get(name)
            if backend is None and name == "teacher":
                backend = teacher_backend(cfg, cfg.data.test_split)
            elif backend is None:
                backend = get_backend("transformers", model_name_or_path=path, dtype=cfg.teacher.dtype, device=cfg.teacher.device, batch_size=cfg.evaluate.batch_size)
            if hasattr(backend, "check_alignment"):
                backend.check_alignment([p.id for p in problems])
            t0 = time.time()
            results = answer_all(cfg, name, backend, problems)
            task, shots = prompt_for(cfg, name)
            models[name] = {"path": path, "backend": backend.name, "prompt": f"{task}, {shots if shots is not None else 'all'} shots", **summarize(results, backend.num_parameters(), disk_size(path), time.time() - t0)}
            backend.close()
            log.info("%s: accuracy %s on %d problems", name, models[name]["accuracy"], len(results))
            all_results.extend(results)
        write_rows(run.dir / "results.jsonl", all_results)
        report = {"split": cfg.data.test_split, "problems": len(problems), "models": models}
        write_report(run.dir, report)
        if "student" in models:
            from llmdistill.modelcard import add_evaluation

            add_evaluation(Path(models["student"]["path"]), (run.dir / "report.md").read_text())
        return run.finish({"problems": len(problems), "accuracy": {k: m["accuracy"] for k, m in models.items()}})
