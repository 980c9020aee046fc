"""Training under several processes (``accelerate launch``, ``torchrun``): who writes, and when.

Every process trains (Trainer and accelerate shard the batches and reduce the gradients); only
the main process writes the stage's files: the folder guard and ``config.yaml``, the pruned
student, ``examples.jsonl``, ``preflight.json``, the checkpoint marker, the model, the model card
and ``stats.json``. The others wait at a barrier where they read what the main process wrote
(``main_first``). One process, the default, is the same code with the barriers as no-ops.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from llmdistill.errors import UserError

log = logging.getLogger(__name__)


def world_size() -> int:
    """How many processes this launch started (``WORLD_SIZE``, set by accelerate and torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


class Processes:
    """This process's place in the launch; ``Processes()`` with one process is inert."""

    def __init__(self):
        self.world = world_size()
        self.state = None
        if self.world > 1:
            import torch
            from accelerate import PartialState

            # the process group Trainer would start: NCCL on GPUs, gloo on CPUs (accelerate's MULTI_CPU)
            self.state = PartialState(cpu=not torch.cuda.is_available())
            if self.state.num_processes != self.world:
                raise UserError(f"WORLD_SIZE is {self.world} but accelerate started {self.state.num_processes} processes")
        self.rank = self.state.process_index if self.state else 0

    @property
    def main(self) -> bool:
        return self.state is None or self.state.is_main_process

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    @contextmanager
    def main_first(self):
        """The main process runs the block (and writes), then the others run it (and read)."""
        if self.main:
            yield
            self.barrier()
        else:
            self.barrier()
            yield

    def close(self, finished: bool) -> None:
        """End the launch's process group before the interpreter exits: every process waits for the
        others (when this one finished its work), so none leaves while another still talks to
        it, then the group is destroyed. After an error there is no barrier: the others may never
        reach it. (The CLI then leaves without exit-time destructors: ``cli._leave_launch``.)"""
        if self.state is None:
            return
        if finished:
            self.barrier()
        self.state.destroy_process_group()
        self.state = None

    def gather(self, value) -> list:
        if self.state is None:
            return [value]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def require_same(self, value, what: str) -> None:
        """Refuse a launch whose processes disagree on ``value`` (e.g. the config hash)."""
        seen = self.gather(value)
        if len(set(map(str, seen))) > 1:
            raise UserError(
                f"the {self.world} training processes see different {what}: {seen}; launch them with the same config and overrides"
            )

    def sum_counts(self, counts: dict) -> dict:
        """Per-process counters (examples and tokens seen) summed over the processes."""
        total: Counter = Counter()
        for c in self.gather(dict(counts)):
            total.update(c)
        return dict(total)


class WorkerRun:
    """What a non-main process sees of the stage run: the folder to read; it writes nothing there."""

    def __init__(self, stage_dir: Path, overwrite: bool):
        self.dir, self.overwrite = stage_dir, overwrite

    def __enter__(self) -> WorkerRun:
        return self

    def __exit__(self, *exc) -> None:
        return None
