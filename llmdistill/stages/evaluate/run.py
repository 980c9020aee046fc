"""Stage 4, evaluate: every configured model answers the test split with the same answer checker
and greedy decoding, each asked the way it is meant to be used (the teacher with the few-shot CoT
prompt, a label/step-by-step student with the label prompt); the report compares them with
bootstrap confidence intervals, paired McNemar tests and the teacher gap closed.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

from tqdm.auto import tqdm

from llmdistill.answers.checking import check_answer, majority
from llmdistill.answers.reading import parse_completion
from llmdistill.backends import Backend, Request, SamplingParams, get_backend, request_seed, teacher_backend
from llmdistill.config import Config
from llmdistill.data import load_split
from llmdistill.jsonl import write_rows
from llmdistill.outputs import StageLock, StageRun, require_complete, stage_dir, upstream
from llmdistill.prompts import ANSWER_SEPARATOR, answer_stops, build_prompt, load_prompt, wants_chat
from llmdistill.records import EvalResult, Problem
from llmdistill.stages.evaluate.report import add_to_model_card, compare, write_report
from llmdistill.student import has_student, init_path, materialize_student

log = logging.getLogger(__name__)


def untrained_student(cfg: Config, own_dir: Path) -> str:
    """The untrained student: the train stage's pruned copy when it has one of this recipe (read,
    never written, here), else the pretrained model or a pruned copy built in this stage's folder."""
    if cfg.student.init == "pruned" and has_student(init_path(cfg), cfg):
        return str(init_path(cfg))
    return materialize_student(cfg, own_dir / "student_init")


def model_specs(cfg: Config, own_dir: Path) -> dict[str, dict]:
    """Name -> path, prompt task and shots of every model to evaluate (``own_dir``: this stage's folder)."""
    specs: dict[str, dict] = {}
    for name in cfg.evaluate.models:
        if name == "teacher":
            specs[name] = {"path": cfg.teacher.model_name_or_path, "task": "cot", "shots": cfg.data.num_shots}
        else:
            path = untrained_student(cfg, own_dir) if name == "student_init" else str(stage_dir(cfg, "train") / "model")
            specs[name] = {"path": path, "task": cfg.student_task(), "shots": cfg.student_shots()}
    for b in cfg.evaluate.baselines:
        specs[b.name] = {"path": b.model_name_or_path, "task": b.task, "shots": cfg.data.num_shots if b.num_shots is None else b.num_shots}
    return specs


def disk_size(path: str) -> int | None:
    p = Path(path)
    if not p.is_dir():
        return None
    return sum(f.stat().st_size for f in p.glob("*") if f.suffix in (".safetensors", ".bin", ".pt"))


def answer_all(
    cfg: Config,
    name: str,
    backend: Backend,
    problems: list[Problem],
    task: str,
    shots: int | None,
    params: SamplingParams,
    first_sample: int = 0,
) -> list[EvalResult]:
    """``params.n`` answers per problem, each parsed and checked; numbered from ``first_sample``."""
    template = load_prompt(cfg.data.prompt)
    stops = answer_stops(template, cfg.data)
    chat = wants_chat(cfg.data.prompt_format, backend.supports_chat)
    results, bs = [], cfg.evaluate.batch_size
    desc = f"evaluate {name}" + (f" ({params.n} samples)" if first_sample else "")
    for start in tqdm(range(0, len(problems), bs), desc=desc, unit="batch"):
        chunk = problems[start : start + bs]
        requests = []
        for p in chunk:
            assert p.row is not None  # load_split numbers every problem
            requests.append(
                Request(
                    id=p.id,
                    index=p.row,
                    prompt=build_prompt(template, p.question, shots, chat, task=task),
                    seed=request_seed(params.seed, p.id),
                )
            )
        outs = backend.generate(requests, params)
        for p, completions in zip(chunk, outs):
            for s, c in enumerate(completions):
                parsed = parse_completion(c.text, stops, cfg.data.answer_regex)
                verdict, _, key = check_answer(parsed.answer, p, cfg.data)
                results.append(
                    EvalResult(
                        id=p.id,
                        model=name,
                        sample=first_sample + s,
                        question=p.question,
                        gold=p.answer,
                        output=c.text,
                        pred=parsed.answer,
                        verdict=verdict,
                        answer_key=key,
                        finish_reason=c.finish_reason,
                        cut=parsed.cut,
                        prompt_tokens=c.prompt_tokens,
                        completion_tokens=c.completion_tokens,
                        latency_s=c.latency_s,
                    )
                )
    return results


def summarize(results: list[EvalResult], params: int | None, size: int | None, seconds: float) -> dict:
    v = Counter(r.verdict for r in results)
    labelled = len(results) - v["unlabeled"]
    out_tokens = sum(r.completion_tokens for r in results)
    n = max(len(results), 1)
    return {
        "n": len(results),
        "correct": v["correct"],
        "wrong": v["wrong"],
        "unparseable": v["unparseable"],
        "truncated": sum(r.finish_reason == "length" for r in results),
        "accuracy": round(v["correct"] / labelled, 4) if labelled else None,
        "parameters": params,
        "size_bytes": size,
        "prompt_tokens_per_problem": round(sum(r.prompt_tokens for r in results) / n, 1),
        "output_tokens_per_problem": round(out_tokens / n, 1),
        "latency_s_per_problem": round(sum(r.latency_s for r in results) / n, 4),
        "output_tokens_per_s": round(out_tokens / max(seconds, 1e-9), 1),
        "problems_per_s": round(len(results) / max(seconds, 1e-9), 3),
        "seconds": round(seconds, 2),
    }


def sampled_metrics(samples: list[EvalResult], pass_k: list[int]) -> dict:
    """maj@n (majority over parseable sampled answers, ties to the first seen) and pass@k."""
    from llmdistill.stages.evaluate.metrics import pass_at_k

    by_problem: dict[str, list[EvalResult]] = {}
    for r in samples:
        by_problem.setdefault(r.id, []).append(r)
    n = len(next(iter(by_problem.values()))) if by_problem else 0
    maj = 0
    passk = {k: 0.0 for k in pass_k}
    by_problem = {pid: rows for pid, rows in by_problem.items() if rows[0].gold is not None}  # as greedy accuracy: labelled only
    for rows in by_problem.values():
        best, votes = majority(r.answer_key for r in rows)
        if votes:
            maj += next(r.verdict == "correct" for r in rows if r.answer_key == best)
        c = sum(r.verdict == "correct" for r in rows)
        for k in pass_k:
            passk[k] += pass_at_k(len(rows), c, k)
    m = max(len(by_problem), 1)
    return {"n_samples": n, f"maj@{n}": round(maj / m, 4), "pass@k": {str(k): round(v / m, 4) for k, v in passk.items()}}


def _backend(cfg: Config, name: str, path: str, backends: dict | None) -> Backend:
    """The teacher's own engine, or ``evaluate.backend`` for the students and baselines."""
    e = cfg.evaluate
    injected = (backends or {}).get(name)
    if injected is not None:
        return injected
    if name == "teacher":
        return teacher_backend(cfg.teacher, cfg.generate.seed, cfg.data.test_split)
    if e.backend == "vllm":
        return get_backend(
            "vllm",
            model_name_or_path=path,
            dtype=e.dtype,
            max_model_len=e.max_model_len,
            gpu_memory_utilization=e.gpu_memory_utilization,
            seed=e.seed,
        )
    return get_backend("transformers", model_name_or_path=path, dtype=e.dtype, device=e.device, batch_size=e.batch_size)


def evaluate(cfg: Config, backends: dict[str, Backend] | None = None, overwrite: bool = False) -> dict:
    """Evaluate each configured model; ``backends`` lets tests inject models by name."""
    e = cfg.evaluate
    if upstream(cfg, "evaluate"):
        require_complete(cfg, "train")
    # The trained student is read, and its model card written, under the train stage's lock: no
    # train run can replace the model meanwhile, and the card has one writer at a time.
    with StageLock(cfg, "train") if "student" in e.models else nullcontext(), StageRun(cfg, "evaluate", overwrite) as run:
        loaded = load_split(cfg.data, cfg.data.test_split)
        problems = loaded.problems
        greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=e.max_new_tokens, stop=load_prompt(cfg.data.prompt).stop, seed=e.seed)
        sampled = (
            SamplingParams(
                n=e.samples, temperature=e.temperature, top_p=e.top_p, max_new_tokens=e.max_new_tokens, stop=greedy.stop, seed=e.seed
            )
            if e.samples
            else None
        )
        all_results, rationales, models = [], [], {}
        for name, spec in model_specs(cfg, run.dir).items():
            backend = _backend(cfg, name, spec["path"], backends)
            backend.check_alignment([p.id for p in problems], first_rows=cfg.data.max_test is not None, rows=loaded.notes["rows"])
            t0 = time.time()
            params, samples_params = greedy, sampled
            first = name in ("student", "student_init") and cfg.answer_first()
            if first:  # its rationale follows the answer: stop at the blank line
                params = replace(greedy, stop=[*greedy.stop, ANSWER_SEPARATOR])
                samples_params = replace(sampled, stop=[*sampled.stop, ANSWER_SEPARATOR]) if sampled is not None else None
            results = answer_all(cfg, name, backend, problems, spec["task"], spec["shots"], params)
            seconds = time.time() - t0
            models[name] = {
                "path": spec["path"],
                "backend": backend.name,
                "prompt": f"{spec['task']}, {spec['shots'] if spec['shots'] is not None else 'all'} shots",
                **summarize(results, backend.num_parameters(), disk_size(spec["path"]), seconds),
            }
            if e.samples:
                assert samples_params is not None  # made when evaluate.samples is set
                samples = answer_all(cfg, name, backend, problems, spec["task"], spec["shots"], samples_params, first_sample=1)
                models[name].update(sampled_metrics(samples, e.pass_k))
                results += samples
            if e.inspect_rationales and spec["task"] == "label":
                # an answer-first student writes its rationale after the answer when not stopped; the others are asked the rationale task
                task = "label" if first else "rationale"
                rationales += answer_all(cfg, f"{name}:rationale", backend, problems[: e.inspect_rationales], task, spec["shots"], greedy)
            backend.close()
            log.info("%s: accuracy %s on %d problems", name, models[name]["accuracy"], len(problems))
            all_results.extend(results)
        write_rows(run.dir / "results.jsonl", all_results)
        if rationales:
            write_rows(run.dir / "rationales.jsonl", rationales)
        report = {
            "split": cfg.data.test_split,
            "problems": len(problems),
            "models": models,
            **compare(all_results, models, problems, e.bootstrap, e.confidence, e.seed, e.disagreements),
        }
        write_report(run.dir, report, plot=e.plot)
        if "student" in models:  # the train stage's folder: under its lock (above), atomically
            add_to_model_card(Path(models["student"]["path"]), report, (run.dir / "report.md").read_text())
        return run.finish(
            {
                "problems": len(problems),
                "data": loaded.notes,
                "accuracy": {k: m["accuracy"] for k, m in models.items()},
                "ci": {k: m.get("ci") for k, m in models.items()},
                "gap_closed": report.get("gap_closed"),
            }
        )
