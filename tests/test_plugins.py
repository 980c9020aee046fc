"""Extension points: a user's own package brings a teacher backend, an answer checker and a filter.

The worked example in ``examples/plugin`` is installed inside the test (pip, offline, into a
folder put on the path of a fresh ``llmdistill`` process), then named in a config by its
registered names; a ``module:function`` path works without installing anything."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from llmdistill.config.file import load_config
from llmdistill.errors import UserError
from tests.conftest import ROOT, write_jsonl

URL_OF = {1: "https://example.org/sums", 2: "https://spam.example.com/cheat"}  # problem 1 cites an allowed page, 2 does not


class InHouseAPI:
    """The example backend's (non-OpenAI) API: answers 'Sam has i apples and gets 2 more' with i + 2,
    except problem 3, whose answer is wrong."""

    def __init__(self):
        self.requests: list[dict] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.requests.append(body)
                outputs = [[{"text": api.answer(p), "finish_reason": "stop"}] * body["n"] for p in body["prompts"]]
                usage = [{"prompt_tokens": len(p) // 4, "completion_tokens": 10 * body["n"]} for p in body["prompts"]]
                data = json.dumps({"outputs": outputs, "usage": usage}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/generate"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def answer(prompt: str) -> str:
        i = int(re.findall(r"Sam has (\d+) apples", prompt)[-1])
        cite = f" See {URL_OF[i]}." if i in URL_OF else ""
        return f"Sam has {i} + 2 = {i + 2} apples.{cite} The answer is {i + 2 + (i == 3)}."

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """examples/plugin installed, offline, into a folder of its own (its entry points with it)."""
    src, site = tmp_path_factory.mktemp("src") / "plugin", tmp_path_factory.mktemp("site")
    shutil.copytree(ROOT / "examples" / "plugin", src)  # pip builds in the source folder: keep the repository clean
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "--no-index", "--target", str(site), str(src)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    return site


def _config(tmp_path, url: str) -> Path:
    train = [
        {"id": f"tr{i}", "question": f"Sam has {i} apples and gets 2 more. How many apples does Sam have?", "answer": str(i + 2)}
        for i in range(5)
    ]
    write_jsonl(tmp_path / "data" / "train.jsonl", train)
    write_jsonl(tmp_path / "data" / "test.jsonl", train[:1])
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "data": {"path": str(tmp_path / "data"), "prompt": str(ROOT / "prompts" / "arithmetic_cot.yaml"), "num_shots": 1},
        "teacher": {"model_name_or_path": "inhouse-70b", "backend": "inhouse", "batch_size": 2, "options": {"url": url, "timeout_s": 30}},
        "filter": {"order": ["truncated", "parse", "correct", "no_urls"], "options": {"no_urls": {"allow": ["example.org"]}}},
    }
    cfg["data"]["answer_type"] = "unordered_list"  # the plugin's checker
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cli(site, *args, cwd=ROOT):
    env = {"PYTHONPATH": f"{site}:{ROOT}", "PATH": "/usr/bin:/bin", "HOME": str(site)}
    return subprocess.run(
        [sys.executable, "-m", "llmdistill", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_an_installed_plugin_brings_a_backend_a_checker_and_a_filter(plugin_site, tmp_path):
    api = InHouseAPI()
    try:
        config = _config(tmp_path, api.url)
        gen = _cli(plugin_site, "generate", config)
        assert gen.returncode == 0, gen.stderr[-3000:]
        filt = _cli(plugin_site, "filter", config)
        assert filt.returncode == 0, filt.stderr[-3000:]
    finally:
        api.close()
    # the backend: every problem sent in batches of teacher.batch_size, with per-request seeds, as plain prompts
    assert [len(r["prompts"]) for r in api.requests] == [2, 2, 1] and all(len(r["seeds"]) == len(r["prompts"]) for r in api.requests)
    traces = [json.loads(line) for line in (tmp_path / "run" / "generate" / "traces.jsonl").read_text().splitlines()]
    assert len(traces) == 5 and {t["backend"] for t in traces} == {"inhouse"} and traces[0]["prompt"].endswith("A:")
    # the checker judged every answer (problem 3's is wrong); the filter dropped the rationale citing a page outside "allow"
    rejected = {
        json.loads(line)["id"]: json.loads(line) for line in (tmp_path / "run" / "filter" / "rejected.jsonl").read_text().splitlines()
    }
    assert set(rejected) == {"tr2", "tr3"}
    assert rejected["tr3"]["rejected_by"] == "correct" and rejected["tr3"]["reason"] == "wrong answer: ['6'] != ['5']"
    assert rejected["tr2"]["rejected_by"] == "no_urls" and rejected["tr2"]["reason"] == f"rationale cites {URL_OF[2]}."
    stats = json.loads((tmp_path / "run" / "filter" / "stats.json").read_text())
    assert stats["kept"] == 3 and stats["funnel"]["no_urls"] == {**stats["funnel"]["no_urls"], "in": 4, "out": 3}


def test_a_plugin_name_that_is_not_installed_is_one_line(plugin_site, tmp_path):
    config = _config(tmp_path, "http://127.0.0.1:9/none")
    text = config.read_text().replace("backend: inhouse", "backend: inhuose")
    config.write_text(text)
    done = _cli(plugin_site, "generate", config)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert (
        "unknown backend 'inhuose' (built in: transformers, vllm, openai, replay; plugins: inhouse; or a 'module:Class' path)"
        in done.stderr
    )


def test_a_path_names_a_plugin_without_installing_it(make_config, scripted, tmp_path):
    """``module:attr`` paths for a checker and a filter; the scripted teacher itself is named by one."""
    from llmdistill.stages.filter.run import filter_traces
    from llmdistill.stages.generate.run import generate

    scripted.SCRIPT = {
        f"Sam has {i} apples and gets 2 more. How many apples does Sam have?": [f"So {i + 2}. The answer is {i + 2}."] for i in range(6)
    }
    cfg = load_config(
        make_config(
            data={"answer_type": "tests.test_plugins:exact"},
            filter={
                "order": ["parse", "correct", "tests.test_plugins:drop_odd"],
                "options": {"tests.test_plugins:drop_odd": {"why": "odd"}},
            },
        )
    )
    generate(cfg)
    stats = filter_traces(cfg)
    assert stats["kept"] == 3 and stats["rejected_by"] == {"tests.test_plugins:drop_odd": 3}


def exact(pred: str, gold: str) -> str:
    return "correct" if pred.strip() == gold.strip() else "wrong"


def drop_odd(rows, options):
    return [options["why"] if int(r.pred) % 2 else None for r in rows]


@pytest.mark.parametrize(
    "sections,message",
    [
        ({"teacher": {"backend": "nosuch.module:Backend"}}, "backend 'nosuch.module:Backend' could not be loaded: ModuleNotFoundError"),
        ({"teacher": {"backend": "tests.test_plugins:exact"}}, "not a subclass of llmdistill.backends.Backend"),
        (
            {"teacher": {"backend": "transformers", "options": {"url": "x"}}},
            "teacher.options is not read by teacher.backend 'transformers'",
        ),
        ({"teacher": {"dtype": "bfloat16"}}, "teacher.dtype is not read by a plugin backend"),
        ({"data": {"answer_type": "numbers"}}, "unknown data.answer_type 'numbers' (built in: numeric, choice, label, math"),
        ({"data": {"answer_type": "tests.test_plugins:exact", "tolerance": 0.1}}, "data.tolerance is not read"),
        ({"filter": {"order": ["parse", "no_such_filter"]}}, "filter.order: unknown filter 'no_such_filter'"),
        ({"filter": {"options": {"no_urls": {}}}}, "filter.options.no_urls is not read"),
    ],
)
def test_a_plugin_setting_that_cannot_work_is_refused_in_one_line(make_config, sections, message):
    with pytest.raises(UserError) as e:
        load_config(make_config(**sections))
    assert message in str(e.value) and "\n" not in str(e.value)
