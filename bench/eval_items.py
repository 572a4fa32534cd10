"""Write N four-choice items in HellaSwag's JSONL format for timing `mlactl eval` (bench/gpu-eval.sh).

    python3 bench/eval_items.py --items 10000 --out items.jsonl [--context-words 60] [--ending-words 18] [--seed 0]

Words are drawn (seeded) from a fixed list of common English words, so with the GPT-2 tokenizer a context is about
one token per word (HellaSwag's validation contexts average about 80 tokens with their activity label, endings
about 24). The labels are random: this file measures speed, not accuracy.
"""
import argparse
import json
import random

WORDS = ("the a man woman child dog ball water house car road tree river city people time day night year way "
         "hand eye head door room table chair window book paper phone music game team player coach field kitchen "
         "knife bowl pan oven plate cup bottle shirt shoe hat bike boat rope wall floor roof garden grass snow rain "
         "sun wind fire light stone sand hill lake bridge street shop market school class teacher student friend "
         "is was are were be has had does did can will would should could then now also just still again "
         "walks runs jumps throws catches holds puts takes gives shows turns opens closes starts stops cuts "
         "washes cleans paints builds pulls pushes lifts drops carries moves sits stands looks watches talks "
         "slowly quickly carefully again together outside inside around across through over under near behind "
         "red blue green small large old new long short warm cold wet dry heavy light bright dark clean dirty").split()


def sentence(rng: random.Random, n: int) -> str:
    words = [rng.choice(WORDS) for _ in range(max(1, n))]
    return " ".join(words).capitalize() + "."


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--context-words", type=int, default=60)
    ap.add_argument("--ending-words", type=int, default=18)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    jitter = lambda n: max(1, round(n * rng.uniform(0.75, 1.25)))  # noqa: E731
    with open(args.out, "w") as f:
        for _ in range(args.items):
            ctx_words = jitter(args.context_words)
            record = {
                "activity_label": rng.choice(WORDS).capitalize(),
                "ctx_a": sentence(rng, ctx_words * 2 // 3),
                "ctx_b": sentence(rng, ctx_words - ctx_words * 2 // 3).lower(),
                "endings": [sentence(rng, jitter(args.ending_words)).lower() for _ in range(4)],
                "label": rng.randrange(4),
            }
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
