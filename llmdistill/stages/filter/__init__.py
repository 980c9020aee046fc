"""Stage 2, filter: parse, check and clean the traces; every rejected row keeps its filter and reason.

``run`` is the stage (streamed, a chunk at a time); ``rules`` holds the filters; ``stream`` runs
them over chunks and passes; ``dedup`` is exact and MinHash near-duplicate detection; ``pool``
computes the text-heavy filters' features in worker processes."""

from llmdistill.stages.filter.run import filter_traces, run_filters

__all__ = ["filter_traces", "run_filters"]
