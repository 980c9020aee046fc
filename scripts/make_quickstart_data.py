"""Write the quickstart dataset: arithmetic word problems from templates, with a fixed seed.

One- and two-step problems (add, subtract, multiply, divide exactly), gold answers as numbers.
Train and test never share a question.

    python scripts/make_quickstart_data.py [--out data/quickstart] [--train 200] [--test 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

NAMES = ["Sam", "Mia", "Tom", "Lily", "Omar", "Ava", "Leo", "Zoe", "Ravi", "Nina", "Ben", "Ella"]
ITEMS = ["apples", "pens", "marbles", "stickers", "books", "cookies", "coins", "shells", "cards", "balloons"]
BOXES = {"box": "boxes", "bag": "bags", "jar": "jars", "basket": "baskets", "tray": "trays", "shelf": "shelves"}


def one_step(r: random.Random) -> tuple[str, int]:
    name, item, box = r.choice(NAMES), r.choice(ITEMS), r.choice(list(BOXES))
    boxes = BOXES[box]
    kind = r.choice(["add", "sub", "mul", "div"])
    if kind == "add":
        a, b = r.randint(2, 30), r.randint(2, 30)
        return f"{name} has {a} {item}. {name} gets {b} more {item}. How many {item} does {name} have now?", a + b
    if kind == "sub":
        a = r.randint(10, 50)
        b = r.randint(1, a - 1)
        return f"{name} had {a} {item} and gave {b} of them away. How many {item} does {name} have left?", a - b
    if kind == "mul":
        a, b = r.randint(2, 10), r.randint(2, 10)
        return f"There are {a} {boxes} with {b} {item} in each {box}. How many {item} are there in all?", a * b
    b, q = r.randint(2, 9), r.randint(2, 10)
    return f"{name} shares {b * q} {item} equally among {b} friends. How many {item} does each friend get?", q


def two_step(r: random.Random) -> tuple[str, int]:
    name, item, box = r.choice(NAMES), r.choice(ITEMS), r.choice(list(BOXES))
    boxes = BOXES[box]
    a, b = r.randint(2, 9), r.randint(2, 9)
    if r.random() < 0.5:
        c = r.randint(1, a * b - 1)
        return f"{name} has {a} {boxes} with {b} {item} in each {box}, then gives away {c} {item}. How many {item} are left?", a * b - c
    c = r.randint(2, 20)
    return (
        f"{name} buys {a} {boxes} of {item} with {b} {item} in each {box} and already had {c} {item}. How many {item} does {name} have now?",
        a * b + c,
    )


def make(n_train: int, n_test: int, seed: int) -> dict[str, list[dict]]:
    r = random.Random(seed)
    seen: set[str] = set()
    rows: list[dict] = []
    while len(rows) < n_train + n_test:
        question, answer = (two_step if r.random() < 0.2 else one_step)(r)
        if question in seen:
            continue
        seen.add(question)
        rows.append({"question": question, "answer": str(answer)})
    splits = {"train": rows[:n_train], "test": rows[n_train:]}
    for split, items in splits.items():
        for i, row in enumerate(items):
            row["id"] = f"{split}-{i:04d}"
    return splits


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/quickstart"))
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for split, items in make(args.train, args.test, args.seed).items():
        with open(args.out / f"{split}.jsonl", "w") as fh:
            fh.writelines(json.dumps({"id": row["id"], "question": row["question"], "answer": row["answer"]}) + "\n" for row in items)
        print(f"wrote {len(items)} {split} problems to {args.out / f'{split}.jsonl'}")
