"""Regenerate the bundled modifier datasets (seeded: the same files on every machine).

    python src/kit/bundled/modifiers/generate.py

Two small tasks the tiny default model learns (last_digit in ~300-500 steps, reverse
in ~500-1000: see conf/experiment/modifiers.yaml), each phrased a few ways so a router
has something to learn. Train and test rows never overlap.

reverse reverses the digits of a 3-digit number placed at the end of the question. It
used to reverse 3 letters a-j placed anywhere in the question; the tiny model never
learned that (loss flat for 1,860 steps at every rank and lr tried): the templates'
own words are spelled in the same single letters, so nothing marks which letters
to copy. Digits appear in the question only in the number.
The parity modifier reuses ``bundled/parity_train.jsonl``. These files live in
a subfolder on purpose: the tiny tokenizer is trained on the top-level bundled
files only, so adding modifier data does not change the default model.
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).parent

LAST_DIGIT = ["What is the last digit of {n}?", "Give the final digit of {n}.", "Last digit of {n}?"]
REVERSE = ["Reverse the digits of {w}.", "Write backwards: {w}.", "Spell in reverse: {w}."]


def last_digit_rows(rng: random.Random, numbers: list[int]) -> list[dict]:
    return [{"question": rng.choice(LAST_DIGIT).format(n=n), "answer": str(n % 10)} for n in numbers]


def reverse_rows(rng: random.Random, numbers: list[str]) -> list[dict]:
    return [{"question": rng.choice(REVERSE).format(w=w), "answer": w[::-1]} for w in numbers]


def write(name: str, rows: list[dict]) -> None:
    with open(HERE / name, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def main() -> None:
    rng = random.Random(7)
    numbers = rng.sample(range(100, 10_000), 600)
    three_digit = [str(n) for n in rng.sample(range(100, 1000), 600)]
    write("last_digit_train.jsonl", last_digit_rows(rng, numbers[:500]))
    write("last_digit_test.jsonl", last_digit_rows(rng, numbers[500:]))
    write("reverse_train.jsonl", reverse_rows(rng, three_digit[:500]))
    write("reverse_test.jsonl", reverse_rows(rng, three_digit[500:]))


if __name__ == "__main__":
    main()
