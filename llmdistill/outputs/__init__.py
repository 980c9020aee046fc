"""What every stage's output shares: its folder, what makes it the same output (``identity``),
whether it is complete, and who may write it (``folder``)."""

from llmdistill.outputs.folder import (
    STAGES,
    StageLock,
    StageRun,
    holds_outputs,
    is_complete,
    read_stats,
    refusal,
    require_complete,
    stage_dir,
    upstream,
)
from llmdistill.outputs.identity import changes, content, content_hash, saved_config

__all__ = [
    "STAGES",
    "StageLock",
    "StageRun",
    "changes",
    "content",
    "content_hash",
    "holds_outputs",
    "is_complete",
    "read_stats",
    "refusal",
    "require_complete",
    "saved_config",
    "stage_dir",
    "upstream",
]
