"""Stage 1, generate: the teacher writes rationale-plus-answer traces for the train split.

``run`` is the stage (resumable: rows on disk, provenance checked, only missing samples asked);
``teacher`` turns a batch of problems into traces with provenance, for every engine; the engines
beside the local one are ``ray`` (the backend in a Ray Data actor pool) and ``ray_llm`` (Ray's
vLLM batch API)."""

from llmdistill.stages.generate.run import generate

__all__ = ["generate"]
