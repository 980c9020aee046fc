"""How much of a CPU training step goes to the kernel: glibc's malloc gives large freed blocks back
to the OS and faults them in again on the next step, when batches change shape. Run it as it is,
with the tunables that keep those blocks in the process, and with the same settings made by mallopt:

    .venv/bin/python scripts/bench_malloc.py default
    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184 .venv/bin/python scripts/bench_malloc.py tunables
    .venv/bin/python scripts/bench_malloc.py mallopt    # the same two settings, set by the process itself

SmolLM2-135M-Instruct (``scripts/fetch_smollm2.py``), fp32, AdamW, batches of 16 rows whose
lengths cycle through SVAMP-like values; 14 timed steps after 2 untimed ones.
"""

import ctypes
import resource
import sys
import time
from pathlib import Path

LENGTHS = [92, 140, 60, 200, 110, 75, 160, 130]


def main(label: str) -> None:
    if label == "mallopt":
        libc = ctypes.CDLL("libc.so.6")
        assert libc.mallopt(-1, 2**31 - 1) and libc.mallopt(-3, 2**31 - 1)  # M_TRIM_THRESHOLD, M_MMAP_THRESHOLD
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(
        str(Path(__file__).resolve().parents[1] / "models" / "SmolLM2-135M-Instruct"), dtype=torch.float32
    )
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    steps = []  # (seconds, system CPU s, user CPU s, minor page faults)
    for i, length in enumerate(LENGTHS * 2):
        x = torch.randint(0, model.config.vocab_size, (16, length))
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
        r1, dt = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
        if i >= 2:
            steps.append((dt, r1.ru_stime - r0.ru_stime, r1.ru_utime - r0.ru_utime, r1.ru_minflt - r0.ru_minflt))
    n = len(steps)
    s, sys_s, user_s, faults = (sum(col) / n for col in zip(*steps))
    print(f"{label}: {s:.2f} s/step, system CPU {sys_s:.2f} s/step, user CPU {user_s:.2f} s/step, {faults:,.0f} minor page faults/step")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "run")
