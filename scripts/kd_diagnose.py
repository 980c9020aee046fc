"""Why on-policy KD does or does not move a student: the teacher's view of the student's own answers.

For each test problem, the student answers greedily with its label prompt (as the evaluate stage
asks it); the teacher then scores every token of that answer (teacher-forced on the student's
prefix, as on-policy KD does). Reported: the mean per-token generalized JSD (beta 0.5, the KD loss),
how often the teacher's top token differs from the student's, and, on the answers where it differs
somewhere, the first such token: the teacher's
probability of its own token and of the student's there, and that token's share of the answer's JSD.

    .venv/bin/python scripts/kd_diagnose.py --student runs/kd_cpu2/sft/train/model --teacher runs/kd_cpu2/teacher/train/model
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(args) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from llmdistill.backends.transformers import load_tokenizer
    from llmdistill.config.file import load_config
    from llmdistill.data import load_split
    from llmdistill.prompts import PromptRenderer, load_prompt

    cfg = load_config(ROOT / "configs" / "svamp_palm.yaml", [f"data.max_test={args.max_test}"])
    tok = load_tokenizer(args.student)
    render = PromptRenderer(load_prompt(cfg.data.prompt), tok, cfg.student_shots(), cfg.data.prompt_format)
    student = AutoModelForCausalLM.from_pretrained(args.student, dtype=torch.float32).eval()
    teacher = AutoModelForCausalLM.from_pretrained(args.teacher, dtype=torch.float32).eval()
    problems = load_split(cfg.data, cfg.data.test_split).problems
    tokens = jsd_sum = differ = 0
    first = []  # per problem whose greedy answers differ: (p_teacher own, p_teacher student's, share of the JSD)
    tok.padding_side = "left"  # batched greedy answers, then each one scored alone (no padding in the scores)
    prompts = [render(p.question, cfg.student_task()) for p in problems]
    answers = []
    with torch.no_grad():
        for i in range(0, len(prompts), 20):
            batch = tok(prompts[i : i + 20], return_tensors="pt", padding=True)
            gen = student.generate(**batch, max_new_tokens=24, do_sample=False, pad_token_id=tok.eos_token_id)[
                :, batch.input_ids.shape[1] :
            ]
            for row in gen:  # up to and including the first end-of-sequence token, as the student wrote it
                ends = (row == tok.eos_token_id).nonzero().flatten()
                answers.append(row[: int(ends[0]) + 1] if len(ends) else row)
        for prompt, out in zip(prompts, answers):
            ids = tok(prompt, return_tensors="pt").input_ids
            seq = torch.cat([ids[0], out])[None]
            n = len(out)
            ls = student(seq).logits[0, ids.shape[1] - 1 : -1].log_softmax(-1)  # [n, vocab]: predicting each answer token
            lt = teacher(seq).logits[0, ids.shape[1] - 1 : -1].log_softmax(-1)
            mix = torch.logsumexp(torch.stack([ls, lt]) + torch.log(torch.tensor(0.5)), 0)
            jsd = 0.5 * ((ls.exp() * (ls - mix)).sum(-1) + (lt.exp() * (lt - mix)).sum(-1))  # [n]
            tokens += n
            jsd_sum += float(jsd.sum())
            other = (lt.argmax(-1) != out).nonzero().flatten()
            differ += len(other)
            if len(other):
                j = int(other[0])
                first.append((float(lt[j].max().exp()), float(lt[j, out[j]].exp()), float(jsd[j] / jsd.sum())))
    k = len(first)
    result = {
        "problems": len(problems),
        "answer_tokens": tokens,
        "mean_token_jsd": jsd_sum / tokens,
        "tokens_teacher_top_differs": differ / tokens,
        "answers_with_a_divergence": k,
        "first_divergence": {
            "teacher_p_own_token": sum(f[0] for f in first) / k,
            "teacher_p_student_token": sum(f[1] for f in first) / k,
            "share_of_answer_jsd": sum(f[2] for f in first) / k,
        },
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", required=True)
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--max-test", type=int, default=200)
    ap.add_argument("--json")
    main(ap.parse_args())
