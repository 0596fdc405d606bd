"""Regenerate the bundled modifier datasets (seeded: the same files on every machine).

    python src/kit/bundled/modifiers/generate.py

Two small tasks the tiny default model learns in seconds, each phrased a few
ways so a router has something to learn. Train and test rows never overlap.
The parity modifier reuses ``bundled/parity_train.jsonl``. These files live in
a subfolder on purpose: the tiny tokenizer is trained on the top-level bundled
files only, so adding modifier data does not change the default model.
"""

import itertools
import json
import random
from pathlib import Path

HERE = Path(__file__).parent
LETTERS = "abcdefghij"

LAST_DIGIT = ["What is the last digit of {n}?", "Give the final digit of {n}.", "Last digit of {n}?"]
REVERSE = ["Reverse the word {w}.", "Spell {w} backwards.", "Write {w} in reverse."]


def last_digit_rows(rng: random.Random, numbers: list[int]) -> list[dict]:
    return [{"question": rng.choice(LAST_DIGIT).format(n=n), "answer": str(n % 10)} for n in numbers]


def reverse_rows(rng: random.Random, words: list[str]) -> list[dict]:
    return [{"question": rng.choice(REVERSE).format(w=w), "answer": w[::-1]} for w in words]


def write(name: str, rows: list[dict]) -> None:
    with open(HERE / name, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def main() -> None:
    rng = random.Random(7)
    numbers = rng.sample(range(100, 10_000), 600)
    words = rng.sample(["".join(t) for t in itertools.product(LETTERS, repeat=3)], 600)
    write("last_digit_train.jsonl", last_digit_rows(rng, numbers[:500]))
    write("last_digit_test.jsonl", last_digit_rows(rng, numbers[500:]))
    write("reverse_train.jsonl", reverse_rows(rng, words[:500]))
    write("reverse_test.jsonl", reverse_rows(rng, words[500:]))


if __name__ == "__main__":
    main()
