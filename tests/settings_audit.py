"""Every setting is used or refused, checked by behaviour (tests/test_settings.py).

For every field of every config section, in each of several contexts (a teacher on each backend,
each training mode and KD method, sampled evaluation, Ray, other answer types...), the field is
set to a value other than its default and one of these must hold:

- the config is **refused** at load (or, for a setting this machine cannot run, at the stage's
  start) in one line that names the setting and says it is not read;
- the field is **read** by stage code while the whole pipeline runs in that context (attribute
  reads are traced on the config sections; reads by the config schema and the stage identity
  bookkeeping do not count), and it **changes what the stage produces**: a content field
  changes the stage identity (so a rerun cannot reuse the old output), an operational field
  changes what reaches an engine or trainer, recorded at their boundaries (the backend a stage
  builds and every request batch it sends, Ray's options, the TRL configs, checkpoint resumption,
  the preflight probe, the filter's worker pool, the export and its upload).

Engines are replaced by a recording fake that answers each question with its gold answer, so the
pipeline runs in seconds; training builds the real trainer on a tiny model and stops before the
first step.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import sys
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from llmdistill.backends import Backend, Completion
from llmdistill.config import Config, Section
from llmdistill.config.base import CONTENT, OPERATIONAL, role
from llmdistill.config.file import section_model
from llmdistill.errors import UserError

PACKAGE = Path(__import__("llmdistill").__file__).parent
# Code whose reads of a setting do not count: the stage identity, and the schema's own checks
# (its validators and helpers, named with a leading underscore, changed_fields and refuse_unread).
IDENTITY = str(PACKAGE / "outputs" / "identity.py")
SCHEMA = str(PACKAGE / "config")
SCHEMA_CHECKS = {"changed_fields", "refuse_unread", "upgrade_saved"}
STAGE_OF_SECTION = {
    "data": "generate",
    "teacher": "generate",
    "generate": "generate",
    "filter": "filter",
    "student": "train",
    "train": "train",
    "kd": "train",
    "evaluate": "evaluate",
    "export": "export",
    "curve": "curve",
}
ORDER = ["generate", "filter", "train", "evaluate", "export", "curve"]


class Stop(Exception):
    """Raised by a recorder to end a stage at an engine boundary."""


# --- the fields -------------------------------------------------------------------------------


def fields(model: type = Config, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted path, FieldInfo) of every setting; a list of sections contributes its first item's
    fields (``evaluate.baselines.0.name``)."""
    out = []
    for name, info in model.model_fields.items():
        sub = section_model(info.annotation)
        if sub is not None and issubclass(sub, Section):
            many = typing.get_origin(info.annotation) is list
            out += fields(sub, f"{prefix}{name}.{'0.' if many else ''}")
        else:
            out.append((f"{prefix}{name}", info))
    return out


def get_path(raw: dict, path: str):
    node = raw
    for k in path.split("."):
        node = node[int(k)] if isinstance(node, list) else node.get(k) if isinstance(node, dict) else None
        if node is None:
            return None
    return node


def set_path(raw: dict, path: str, value) -> dict:
    raw = copy.deepcopy(raw)
    node, keys = raw, path.split(".")
    for k in keys[:-1]:
        if isinstance(node, list):
            node = node[int(k)]
        else:
            node = node.setdefault(k, {})
    node[keys[-1]] = value
    return raw


def _bounds(info) -> dict:
    out = {}
    for m in info.metadata:
        for k in ("ge", "gt", "le", "lt"):
            if getattr(m, k, None) is not None:
                out[k] = getattr(m, k)
    return out


def candidates(path: str, info, current, special: dict) -> list:
    """Values other than ``current`` to try, the harness's own first (paths and columns that exist)."""
    if path in special:
        return [v for v in special[path] if v != current]
    ann, b = info.annotation, _bounds(info)
    args = typing.get_args(ann)
    literals = [a for a in args if typing.get_origin(a) is typing.Literal] + ([ann] if typing.get_origin(ann) is typing.Literal else [])
    out: list = []
    for lit in literals:
        out += [v for v in typing.get_args(lit) if v != current]
    if ann is bool or bool in args:
        out.append(not current)
    if typing.get_origin(ann) is list or any(typing.get_origin(a) is list for a in args):
        inner = next((typing.get_args(a) for a in (ann, *args) if typing.get_origin(a) is list), ())
        opts = [v for lit in inner for v in (typing.get_args(lit) if typing.get_origin(lit) is typing.Literal else ())]
        if opts and isinstance(current, list):
            out += [[v for v in current if v != current[-1]] or opts[:1], [*current, *[v for v in opts if v not in current][:1]]]
    numeric = int if (ann is int or int in args) else float if (ann is float or float in args) else None
    if numeric is not None:
        base = current if isinstance(current, (int, float)) and not isinstance(current, bool) else None
        lo = b.get("ge", b.get("gt", 0))
        b.get("le", b.get("lt"))
        for v in ([base + 1, base * 2, base / 2] if base is not None else []) + [lo + 1, lo + 0.5, 2, 16, 32]:
            v = numeric(v) if numeric is int else float(v)
            if (
                v == current
                or ("gt" in b and v <= b["gt"])
                or ("ge" in b and v < b["ge"])
                or ("lt" in b and v >= b["lt"])
                or ("le" in b and v > b["le"])
            ):
                continue
            if v not in out:
                out.append(v)
    if (ann is str or str in args) and not literals:
        out.append("x")
    return out


# --- tracing reads ------------------------------------------------------------------------------


class Reads:
    """Traces attribute reads of config fields by stage code, by dotted path."""

    def __init__(self):
        self.paths: dict[int, str] = {}
        self.seen: set[str] = set()

    def register(self, cfg: Config) -> None:
        def walk(obj, prefix):
            if isinstance(obj, Section):
                self.paths[id(obj)] = prefix
                for name in type(obj).model_fields:
                    walk(obj.__dict__.get(name), f"{prefix}{name}.")
            elif isinstance(obj, list):
                for i, item in enumerate(obj):
                    walk(item, f"{prefix}{i}.")

        walk(cfg, "")

    def install(self, monkeypatch) -> None:
        reads = self

        def traced(obj, name):
            value = object.__getattribute__(obj, name)
            if name in type(obj).model_fields:
                prefix = reads.paths.get(id(obj))
                code = sys._getframe(1).f_code
                bookkeeping = code.co_filename == IDENTITY or (
                    code.co_filename.startswith(SCHEMA) and (code.co_name.startswith("_") or code.co_name in SCHEMA_CHECKS)
                )
                if prefix is not None and not bookkeeping:
                    reads.seen.add(prefix + name)
            return value

        monkeypatch.setattr(Section, "__getattribute__", traced, raising=False)


# --- the recording engines ----------------------------------------------------------------------


class FakeEngine(Backend):
    """Answers each problem with its gold answer (the harness knows them); records every batch."""

    name = "fake"
    supports_chat = True

    def __init__(self, record, answers: dict[str, str], kind: str, kwargs: dict):
        self.record, self.answers, self.kind, self.kwargs = record, answers, kind, kwargs
        self.model_name = kwargs.get("model_name_or_path", "")
        self._real = None

    def generate(self, requests, params):
        self.record("generate", self.kind, len(requests), asdict(params))
        out = []
        for r in requests:
            text = self.prompt_text(r.prompt)
            question = max(self.answers, key=lambda q: text.rfind(q))
            answer = f"Working through '{question[:24]}' gives {self.answers[question]}. The answer is {self.answers[question]}."
            out.append([self._completion(answer, params) for _ in range(params.n)])
        return out

    def _completion(self, text: str, params) -> Completion:
        if not params.logprobs:
            return Completion(text=text, finish_reason="stop", prompt_tokens=12, completion_tokens=8)
        from transformers import AutoTokenizer  # stored logprobs are token ids of the teacher's tokenizer

        self._real = self._real or AutoTokenizer.from_pretrained(self.model_name)
        ids = self._real(text, add_special_tokens=False)["input_ids"]
        top = [[[i, -0.1], [(i + 1) % len(self._real), -2.5]][: params.logprobs] for i in ids]
        return Completion(text=text, finish_reason="stop", prompt_tokens=12, completion_tokens=len(ids), top_logprobs=top, token_ids=ids)

    def num_parameters(self):
        return 1


class FakeDataset:
    """What ``RayWriter`` asks of ``ray.data``: items in blocks, a map_batches (recorded), batches back."""

    def __init__(self, record, items):
        self.record, self.items, self.steps = record, items, []

    def map_batches(self, fn, batch_size, fn_constructor_kwargs, **options):
        self.record("ray.map_batches", {"batch_size": batch_size, **options})
        self.steps.append((fn, batch_size, fn_constructor_kwargs))
        return self

    def iter_batches(self, **_):
        fn, size, kwargs = self.steps[-1]
        actor = fn(**kwargs)
        for i in range(0, len(self.items), size):
            chunk = self.items[i : i + size]
            yield actor({k: [row[k] for row in chunk] for k in chunk[0]})


class FakeRay:
    def __init__(self, record):
        outer = self
        self.record = record

        class Data:
            class DataContext:
                @staticmethod
                def get_current():
                    return type("Ctx", (), {})()

            @staticmethod
            def from_items(items, override_num_blocks=None):
                return FakeDataset(outer.record, items)

            @staticmethod
            def read_json(path, override_num_blocks=None, ray_remote_args=None):
                return FakeDataset(outer.record, [json.loads(line) for line in Path(path).read_text().splitlines()])

        self.data = Data

    def is_initialized(self):
        return False

    def init(self, **kwargs):
        self.record("ray.init", kwargs)


# --- the harness ------------------------------------------------------------------------------


@dataclass
class Context:
    name: str
    raw: dict
    stages: list[str] = field(default_factory=lambda: list(ORDER))
    answers: str = "number"  # which gold answers the fake engine gives
    data: bool = False  # check the data settings although evaluate does not run (a data-shape context)
    only: str | None = None  # check only the fields under this prefix (the other fields are checked elsewhere)


@dataclass
class Verdict:
    context: str
    path: str
    outcome: str  # refused | read+identity | read+engine | NOT READ | NO EFFECT | NO VALUE
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in ("refused", "read+identity", "read+engine")


class Harness:
    def __init__(self, monkeypatch, tmp: Path, config_cls: type[Config], answers: dict[str, str], special: dict):
        self.mp, self.tmp, self.config_cls, self.answers, self.special = monkeypatch, tmp, config_cls, answers, special
        self.events: list = []
        self.reads = Reads()
        self.runs = 0
        self._patch()

    # recorders
    def record(self, *event) -> None:
        self.events.append(json.loads(json.dumps(event, default=str)))

    def _patch(self) -> None:
        import_all()
        import llmdistill.backends as backends
        import llmdistill.stages.export as export
        import llmdistill.stages.filter.pool as filter_pool
        import llmdistill.stages.generate.ray as generate_ray
        import llmdistill.stages.generate.ray_llm as generate_ray_llm
        import llmdistill.stages.train.args as args
        import llmdistill.stages.train.checkpoints as checkpoints
        import llmdistill.stages.train.onpolicy as onpolicy
        import llmdistill.stages.train.sft as sft

        h = self
        original_backend = backends.get_backend

        def get_backend(kind, **kwargs):
            h.record("backend", kind, kwargs)
            return FakeEngine(h.record, h.answers, kind, kwargs)

        patch_everywhere(self.mp, original_backend, get_backend)
        self.mp.setattr(generate_ray, "_ray", lambda: FakeRay(self.record))

        def build(cfg):
            self.record("ray.llm", generate_ray_llm.processor_options(cfg))
            return lambda ds: FakeLLMOutput(ds, self.answers)

        self.mp.setattr(generate_ray_llm, "build", build)
        original_trl = args.trl_class

        def trl_class(name):
            cls = original_trl(name)
            if not name.endswith("Config"):
                return cls

            def make(**kwargs):
                self.record("trl", name, kwargs)
                return cls(**kwargs)

            return make

        patch_everywhere(self.mp, original_trl, trl_class)
        original_ckpt = checkpoints.checkpoint_dir

        def checkpoint_dir(run_dir, name, identity, resume, overwrite=False, procs=None):
            self.record("checkpoint_dir", name, resume)
            return original_ckpt(run_dir, name, identity, resume, overwrite, procs)

        patch_everywhere(self.mp, original_ckpt, checkpoint_dir)

        def train_and_save(cfg, trainer, resume_from, out, identity, procs=None):
            self.record("train_and_save", resume_from is not None)
            checkpoints.save_model(trainer, out, cfg.train.lora is None or cfg.train.lora.merge, identity, procs)
            return {"steps": 0, "train_loss": 0.0, "log_history": []}

        patch_everywhere(self.mp, checkpoints.train_and_save, train_and_save)

        def served_teacher(server):  # the teacher's server: what the client is built with
            self.record("teacher_server", {k: getattr(server, k) for k in type(server).model_fields if k != "top_k"})
            return type("FakeServer", (), {"concurrency": server.concurrency})()

        self.mp.setattr(onpolicy, "served_teacher", served_teacher)
        self.mp.setattr(sft, "probe_seconds_per_token", lambda trainer, n=4: self.record("preflight_probe") or 1e-6)
        original_pool = filter_pool.FeaturePool

        def feature_pool(cfg, names, workers):
            self.record("feature_pool", names, workers)
            return original_pool(cfg, names, workers)

        patch_everywhere(self.mp, original_pool, feature_pool)
        self.mp.setattr(export, "push", lambda folder, repo, private: self.record("push", repo, private))
        self.reads.install(self.mp)

    def curve_plan(self, cfg: Config) -> None:
        """The curve's points as it would run them: each one's folder and train and evaluate
        settings (what reaches the train and evaluate stages), and the reference's models."""
        from llmdistill.curve.run import plan

        made = plan(cfg)
        self.record(
            "curve",
            [(p.name, c.output_dir, c.train.model_dump(mode="json"), c.evaluate.models) for p, c in made.configs.items()],
            made.reference.evaluate.models if made.reference else None,
        )

    # running
    def load(self, raw: dict) -> Config:
        return self.config_cls.model_validate(raw)

    def run(self, cfg: Config, stages: list[str], from_dir: Path | None = None) -> tuple[list, set[str]]:
        """Run ``stages`` (upstream outputs copied from ``from_dir``); the engine record and the reads."""
        from llmdistill.stages.evaluate.run import evaluate
        from llmdistill.stages.export import export
        from llmdistill.stages.filter.run import filter_traces
        from llmdistill.stages.generate.run import generate
        from llmdistill.stages.train import train

        functions = {
            "generate": generate,
            "filter": filter_traces,
            "train": train,
            "evaluate": evaluate,
            "export": export,
            "curve": self.curve_plan,
        }
        self.runs += 1
        out = Path(cfg.output_dir)
        if from_dir is not None:
            for stage in ORDER[: ORDER.index(stages[0])]:
                if (from_dir / stage).is_dir():
                    shutil.copytree(from_dir / stage, out / stage)
        self.events, self.reads.seen = [], set()
        self.reads.paths = {}
        self.reads.register(cfg)
        from_json = self.config_cls.model_validate_json.__func__

        def copy_from_json(cls, data, **kw):  # a copy made elsewhere (a Ray actor's): its reads count too
            made = from_json(cls, data, **kw)
            self.reads.register(made)
            return made

        self.mp.setattr(self.config_cls, "model_validate_json", classmethod(copy_from_json))
        try:
            for stage in stages:
                self.events.append(["stage", stage])
                result = functions[stage](cfg)
                if stage == "export":  # what it wrote: the files, their sizes and the card
                    folder = Path(result["folder"])
                    self.record(
                        "export",
                        result,
                        sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*") if p.is_file()),
                        (folder / "README.md").read_text(),
                    )
        finally:
            self.mp.setattr(self.config_cls, "model_validate_json", classmethod(from_json))
        events = normalize(self.events, [str(out)])
        return events, set(self.reads.seen)


def import_all() -> None:
    """Every llmdistill module, imported before any patching: a module first imported while a
    patch is in place would keep the patched name after the test (``from x import f`` copies)."""
    import importlib
    import pkgutil

    import llmdistill

    for info in pkgutil.walk_packages(llmdistill.__path__, "llmdistill."):
        importlib.import_module(info.name)


def patch_everywhere(monkeypatch, original, replacement) -> None:
    """Replace every binding of ``original`` in llmdistill's modules (``from x import f`` copies)."""
    for name, module in list(sys.modules.items()):
        if name == "llmdistill" or name.startswith("llmdistill."):
            for attr, value in list(vars(module).items()):
                if value is original:
                    monkeypatch.setattr(module, attr, replacement)


def normalize(events: list, roots: list[str]) -> list:
    """The record without this run's own folder (runs of one context live in different folders)."""
    text = json.dumps(events)
    for root in roots:
        text = text.replace(root, "<out>")
    text = re.sub(r'"created_at": [0-9.e+]+', '"created_at": 0', text)
    return json.loads(text)


class FakeLLMOutput:
    """Ray's vLLM processor output for ``ray_llm``: a generated text per row."""

    def __init__(self, ds, answers):
        self.ds, self.answers = ds, answers

    def iter_batches(self, **_):
        import pandas as pd

        rows = []
        for row in self.ds.items:
            q = max(self.answers, key=lambda k: row["prompt"].rfind(k))
            rows.append(
                {
                    **row,
                    "generated_text": f"The answer is {self.answers[q]}.",
                    "generated_tokens": [1, 2],
                    "num_generated_tokens": 2,
                    "num_input_tokens": 10,
                    "logprobs": None,
                }
            )
        yield pd.DataFrame(rows)


def stage_of(path: str) -> str:
    return STAGE_OF_SECTION.get(path.split(".")[0], "generate")


def named(message: str, path: str) -> bool:
    """Whether a message names the setting, or the section holding it."""
    return any(p in message for p in [path] + [path.rsplit(".", k)[0] for k in range(1, path.count(".") + 1)] if "." in p or p == path)


def is_unread_refusal(message: str, path: str) -> bool:
    """A refusal that names the setting (or its section) and says it is not read."""
    return named(message, path) and bool(re.search(r"\bnot read\b|\bis read with\b|\bread only\b|this machine has none", message))


def audit(h: Harness, contexts: list[Context], only: str | None = None) -> list[Verdict]:
    """The verdict for every (context, field); ``only`` restricts to fields under a prefix."""
    from pydantic import ValidationError

    verdicts: list[Verdict] = []
    engine_checked: dict[str, str] = {}  # operational field -> the context whose record it changed
    for ctx in contexts:
        base_cfg = h.load(ctx.raw)
        base_dir = Path(base_cfg.output_dir)
        base_events, base_reads = h.run(base_cfg, ctx.stages)
        base_by_stage = split_by_stage(base_events)
        for path, info in fields(h.config_cls):
            if (only and not path.startswith(only)) or (ctx.only and not path.startswith(ctx.only)):
                continue
            section = path.split(".")[0]
            if section != "output_dir" and STAGE_OF_SECTION[section] not in ctx.stages:
                continue
            if section == "data" and not {"filter", "evaluate"} <= set(ctx.stages) and not ctx.data:
                continue  # the test split and answer checking are read downstream of generate
            if path.startswith("evaluate.baselines.0.") and not get_path(ctx.raw, "evaluate.baselines"):
                continue
            if path.startswith("train.lora.") and not get_path(ctx.raw, "train.lora"):
                continue
            if (
                path.startswith("kd.teacher_server.")
                and get_path(ctx.raw, "kd.method") == "on_policy"
                and not get_path(ctx.raw, "kd.teacher_server")
            ):
                continue  # the server's settings, checked in the context with a teacher on a server
            current = get_path(base_cfg.model_dump(mode="json"), path)
            verdict, tried, refusals = None, [], []
            for value in candidates(path, info, current, h.special):
                raw = set_path(ctx.raw, path, value)
                raw["output_dir"] = str(h.tmp / f"{ctx.name}-{path}-{len(tried)}")
                tried.append(value)
                try:
                    cfg = h.load(raw)
                except ValidationError as e:
                    message = str(e)
                    if is_unread_refusal(message, path):
                        verdict = Verdict(ctx.name, path, "refused", f"{value!r}: {first_line(message)}")
                        break
                    refusals.append(first_line(message))
                    continue  # refused for another reason (an invalid value, or one that needs another setting): try the next
                if path == "output_dir":
                    verdict = Verdict(ctx.name, path, "read+identity", "every stage folder moves")
                    break
                content_role = role(info) == CONTENT
                if content_role:
                    if path not in base_reads:
                        verdict = Verdict(ctx.name, path, "NOT READ", f"{value!r} accepted; no stage read it")
                        break
                    from llmdistill.outputs.identity import content

                    stages = [s for s in ("generate", "filter", "train", "evaluate") if s in ctx.stages]
                    changed = any(content(cfg, s) != content(base_cfg, s) for s in stages) or path.startswith("export.")
                    if path.startswith("export."):
                        changed = changed_record(h, cfg, ctx, path, base_dir, base_by_stage)
                    verdict = Verdict(ctx.name, path, "read+identity" if changed else "NO EFFECT", repr(value))
                    break
                assert role(info) == OPERATIONAL, path
                if path not in base_reads:
                    verdict = Verdict(ctx.name, path, "NOT READ", f"{value!r} accepted; no stage read it")
                    break
                if path in engine_checked:
                    verdict = Verdict(ctx.name, path, "read+engine", f"(record changed in context {engine_checked[path]})")
                    break
                try:
                    changed = changed_record(h, cfg, ctx, path, base_dir, base_by_stage)
                except UserError as e:
                    if is_unread_refusal(str(e), path):
                        verdict = Verdict(ctx.name, path, "refused", f"{value!r} at the stage's start: {first_line(str(e))}")
                        break
                    raise
                if changed:
                    engine_checked[path] = ctx.name
                    verdict = Verdict(ctx.name, path, "read+engine", repr(value))
                else:
                    verdict = Verdict(ctx.name, path, "NO EFFECT", f"{value!r}: read, but nothing reaching an engine or trainer changed")
                break
            if verdict is None and refusals and all(named(m, path) for m in refusals):  # every value refused, each time naming it
                verdict = Verdict(ctx.name, path, "refused", f"every value tried ({tried}): {refusals[0]}")
            verdicts.append(verdict or Verdict(ctx.name, path, "NO VALUE", f"no valid value to try among {tried}: {refusals}"))
    return verdicts


def split_by_stage(events: list) -> dict[str, list]:
    out: dict[str, list] = {}
    stage = None
    for e in events:
        if e[0] == "stage":
            stage = e[1]
            out[stage] = []
        elif stage:
            out[stage].append(e)
    return out


def changed_record(h: Harness, cfg: Config, ctx: Context, path: str, base_dir: Path, base_by_stage: dict) -> bool:
    """Rerun the field's stage (upstream outputs copied from the context's run) and compare."""
    stage = stage_of(path)
    stages = ctx.stages[ctx.stages.index(stage) :] if stage in ctx.stages else ctx.stages
    events, _ = h.run(cfg, stages[:1], from_dir=base_dir)
    return split_by_stage(events).get(stages[0]) != base_by_stage.get(stages[0])


def first_line(message: str) -> str:
    """The reason in a pydantic error (its indented line, not the location above it), or the message."""
    lines = [
        line.strip().removeprefix("Value error, ")
        for line in message.splitlines()
        if line.startswith("  ") and "errors.pydantic" not in line
    ]
    return (lines[0] if lines else message.strip().splitlines()[0]).split(" [type=")[0][:240]


def write_raw(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path
