"""``generate.engine: ray``: the teacher's backend in a Ray Data actor pool.

Each actor builds the configured backend once (a vLLM engine with its own tensor parallelism, an
OpenAI client, transformers, replay) and turns batches of problems into traces exactly as the local
engine does (``generate.ask_teacher``: the same prompts and per-request seeds). The driver streams
the results back and stays the only writer of ``traces.jsonl``, so resuming after a crash is the
local engine's: a rerun asks only for the missing ``(id, sample)`` pairs. An actor that dies is
restarted by Ray and its batch retried.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from llmdistill.atomic import scratch_dir
from llmdistill.config import Config
from llmdistill.errors import UserError
from llmdistill.jsonl import RowAppender
from llmdistill.prompts import PromptTemplate
from llmdistill.records import Problem, Trace
from llmdistill.stages.generate.index import Plan
from llmdistill.stages.generate.teacher import ask_teacher, batched, sampling_params

log = logging.getLogger(__name__)


def _ray():
    try:
        import ray
    except ImportError:
        raise UserError("generate.engine 'ray' needs Ray: pip install 'llmdistill[ray]'") from None
    return ray


class TeacherActor:
    """One replica: the backend, built once, and the batches it is given."""

    def __init__(self, cfg_json: str, split: str, problem_ids: list[str] | None, rows: int | None, first_sample: int, hint: bool):
        from llmdistill.backends import teacher_backend
        from llmdistill.prompts import load_prompt

        self.cfg = Config.model_validate_json(cfg_json)
        self.template = load_prompt(self.cfg.data.prompt)
        self.params = sampling_params(self.cfg, self.template)
        self.backend = teacher_backend(self.cfg.teacher, self.cfg.generate.seed, split)
        if problem_ids is not None:  # (only an engine that checks them gets the split's ids: see generate.run.aligns)
            self.backend.check_alignment(problem_ids, first_rows=self.cfg.data.max_train is not None, rows=rows)
        self.first_sample, self.hint = first_sample, hint

    def __call__(self, batch: dict) -> dict:
        problems = [Problem.model_validate_json(p) for p in batch["problem"]]
        index = {p.id: int(row) for p, row in zip(problems, batch["row"])}
        traces, error = [], ""
        try:
            for finished in ask_teacher(self.cfg, self.backend, self.template, self.params, problems, index, self.first_sample, self.hint):
                traces += finished
        except UserError as e:  # a request failed for good: the finished ones go back to be written, then the driver stops
            error = str(e)
        rows = [t.model_dump_json() for t in traces] + ([""] if error else [])
        return {"trace": rows, "error": [""] * len(traces) + ([error] if error else [])}


class RayWriter:
    """The generate stage's writer when the teacher runs on Ray: same traces, same file, same resume."""

    def __init__(
        self,
        cfg: Config,
        template: PromptTemplate,
        params,
        out: RowAppender,
        done: Plan,
        split: str,
        problem_ids: list[str] | None,
        split_rows: int | None,
    ):
        self.cfg, self.out, self.done, self.split = cfg, out, done, split
        self.problem_ids, self.split_rows = problem_ids, split_rows
        self.template, self.params, self.tokenizer = template, params, None
        self.processor: Callable[[Any], Any] | None = None  # ray.data.llm's processor (ds -> ds), built at first use
        self.problems_seen: set[str] = set()
        self.tokens_out = self.problems_done = 0
        self.ray = _ray()
        r = cfg.generate.ray
        if not self.ray.is_initialized():
            self.ray.init(address=r.address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        self.ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts problems

    def keep(self, rows: list[Trace]) -> None:
        """Append the traces not written before this run (the driver holds none of them)."""
        rows = [t for t in rows if not self.done.has(t.id, t.sample)]
        self.out.write(rows)
        self.done.totals.add(rows)
        self.tokens_out += sum(t.completion_tokens for t in rows)

    def run(self, stream: Iterable[Problem], total: int, first_sample: int = 0, hint: bool = False, desc: str = "generate") -> None:
        """The problems of this pass go to Ray Data through a scratch JSON-lines file it reads as
        it goes: the driver holds neither the problems nor the traces."""
        with scratch_dir(self.out.path.parent / ".ray-work") as work:
            r = self.cfg.generate.ray
            if r.processor == "ray_llm":
                return self._run_ray_llm(stream, total, work, first_sample, hint, desc)
            todo = work / "problems.jsonl"
            with todo.open("w") as f:
                for p in stream:
                    f.write(json.dumps({"problem": p.model_dump_json(), "row": p.row}) + "\n")
            self._run_actors(todo, total, first_sample, hint, desc)
        return None

    def _run_actors(self, todo: Path, total: int, first_sample: int, hint: bool, desc: str) -> None:
        r = self.cfg.generate.ray
        batch = r.batch_size or self.cfg.teacher.batch_size
        # (reading a local file takes no CPU slot: the replicas may hold every CPU of the cluster)
        ds = self.ray.data.read_json(str(todo), override_num_blocks=max(1, -(-total // batch)), ray_remote_args={"num_cpus": 0})
        ds = ds.map_batches(
            TeacherActor,
            batch_size=batch,
            concurrency=r.replicas,
            num_cpus=r.num_cpus_per_replica,
            num_gpus=r.num_gpus_per_replica,
            fn_constructor_kwargs={
                "cfg_json": self.cfg.model_dump_json(),
                "split": self.split,
                "problem_ids": self.problem_ids,
                "rows": self.split_rows,
                "first_sample": first_sample,
                "hint": hint,
            },
        )  # Ray Data restarts an actor that dies and asks its batch again (max_restarts = max_task_retries = -1 by default)
        bar = tqdm(total=total, desc=f"{desc} (ray, {r.replicas} replicas)", unit="problem")
        t0 = time.time()
        for out in ds.iter_batches(batch_size=None, batch_format="default"):
            traces = [Trace.model_validate_json(t) for t in out["trace"] if t]
            self.keep(traces)  # written as each batch arrives: a killed driver loses at most what is in flight
            failed = [e for e in out["error"] if e]
            if failed:
                raise UserError(failed[0])
            done = len({t.id for t in traces})
            self.problems_done += done
            bar.update(done)
            bar.set_postfix(tok_s=f"{self.tokens_out / max(time.time() - t0, 1e-9):.1f}")
        bar.close()

    def _run_ray_llm(self, stream: Iterable[Problem], total: int, work: Path, first_sample: int, hint: bool, desc: str) -> None:
        """The vLLM teacher through ``ray.data.llm`` (``generate_ray_llm``): one row per missing sample,
        written to a scratch file for Ray to read."""
        from llmdistill.backends.transformers import load_tokenizer
        from llmdistill.stages.generate import ray_llm as llm

        if self.processor is None:
            self.processor = llm.build(self.cfg)
            self.tokenizer = load_tokenizer(self.cfg.teacher.model_name_or_path)
        todo, n_rows = work / "samples.jsonl", 0
        with todo.open("w") as f:
            for chunk in batched(stream, 1024):
                for row in llm.llm_rows(self.cfg, self.template, self.params, self.tokenizer, chunk, self.done.has, first_sample, hint):
                    f.write(json.dumps(row) + "\n")
                    n_rows += 1
        r = self.cfg.generate.ray
        blocks = max(1, -(-n_rows // (r.batch_size or self.cfg.teacher.batch_size)))
        ds = self.ray.data.read_json(str(todo), override_num_blocks=blocks, ray_remote_args={"num_cpus": 0})
        bar = tqdm(total=n_rows, desc=f"{desc} (ray.data.llm, {r.replicas} replicas)", unit="sample")
        t0 = time.time()
        for out in self.processor(ds).iter_batches(batch_size=None, batch_format="pandas"):
            traces = [llm.trace_of(self.cfg, self.template, self.params, row, hint) for row in out.to_dict("records")]
            self.keep(traces)
            new = {t.id for t in traces} - self.problems_seen
            self.problems_seen |= new
            self.problems_done += len(new)
            bar.update(len(traces))
            bar.set_postfix(tok_s=f"{self.tokens_out / max(time.time() - t0, 1e-9):.1f}")
        bar.close()

    def stats(self) -> dict:
        r = self.cfg.generate.ray
        return {
            "processor": r.processor,
            "replicas": r.replicas,
            "num_cpus_per_replica": r.num_cpus_per_replica,
            "num_gpus_per_replica": r.num_gpus_per_replica,
            "address": r.address or "local",
        }
