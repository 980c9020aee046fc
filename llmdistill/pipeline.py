"""``llmdistill run``: the four stages in order, skipping any whose output is complete."""

from __future__ import annotations

import logging

from llmdistill.config import Config
from llmdistill.outputs import STAGES, is_complete, stage_dir

log = logging.getLogger(__name__)


def stage_function(stage: str):
    from llmdistill.stages.evaluate.run import evaluate
    from llmdistill.stages.filter.run import filter_traces
    from llmdistill.stages.generate.run import generate
    from llmdistill.stages.train import train

    return {"generate": generate, "filter": filter_traces, "train": train, "evaluate": evaluate}[stage]


def run(cfg: Config, force: bool = False, overwrite: bool = False) -> dict[str, str]:
    """Run every stage; returns what happened to each ('ran' or 'skipped'). A stage whose folder
    holds outputs made with other content settings is refused, or with ``overwrite`` moved aside."""
    done = {}
    for stage in STAGES:
        if not force and is_complete(cfg, stage):
            log.info("%s: output complete for this config, skipping (%s)", stage, stage_dir(cfg, stage))
            done[stage] = "skipped"
            continue
        stage_function(stage)(cfg, overwrite=overwrite)
        done[stage] = "ran"
    return done
