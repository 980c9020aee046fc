"""Stage 4, evaluate: every model answers the test split with the same checker; the report compares
them (``run`` the stage, ``metrics`` intervals and paired tests, ``report`` the report, plot and
model card section)."""

from llmdistill.stages.evaluate.run import evaluate

__all__ = ["evaluate"]
