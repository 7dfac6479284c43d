"""PII scrubbing: recall on labelled corpora of realistic student messages, and the rules
that keep tutoring content (public figures, maths, formulas) intact.

Three corpora, each written by someone who had not seen the recognizers:
pii_corpus.jsonl was used while they were written; pii_corpus_holdout.jsonl was measured
once (93.7%) and then prompted generic fixes (international postcodes, alphanumeric ids,
eponyms); pii_corpus_fresh.jsonl was written after that and never tuned on. All must meet
the targets; the figures are printed and recorded in docs/privacy.md.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tutor.privacy import scrub

pytestmark = pytest.mark.fast

DATA = Path(__file__).parent / "data"
CORPORA = ["pii_corpus.jsonl", "pii_corpus_holdout.jsonl", "pii_corpus_fresh.jsonl"]


def recall(corpus: str) -> tuple[Counter, Counter, int, int, list]:
    found, total, kept, keeps, misses = Counter(), Counter(), 0, 0, []
    for line in (DATA / corpus).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        out = scrub(row["text"], names=row["roster"]).text
        for entity in row["entities"]:
            total[entity["type"]] += 1
            if entity["text"] in out:
                misses.append((entity["type"], entity["text"]))
            else:
                found[entity["type"]] += 1
        for text in row.get("keep", []):
            keeps += 1
            kept += text in out
    return found, total, kept, keeps, misses


@pytest.mark.parametrize("corpus", CORPORA)
def test_entity_recall_meets_the_targets(corpus, capsys):
    found, total, kept, keeps, misses = recall(corpus)
    overall = sum(found.values()) / sum(total.values())
    with capsys.disabled():
        print(f"\n{corpus}: entity recall {overall:.1%} ({sum(found.values())}/{sum(total.values())})")
        for kind in sorted(total):
            print(f"  {kind:15} {found[kind]:3}/{total[kind]:3}  {found[kind] / total[kind]:.0%}")
        print(f"  tutoring content kept: {kept}/{keeps} ({kept / keeps:.0%})")
        for kind, text in misses:
            print(f"  missed {kind}: {text!r}")
    assert overall >= 0.95
    assert found["EMAIL_ADDRESS"] == total["EMAIL_ADDRESS"] > 0
    assert found["PHONE_NUMBER"] == total["PHONE_NUMBER"] > 0
    # Over-scrubbing would gut the training data; privacy wins ties (a public figure the
    # lists do not know is scrubbed), so this bound is looser than recall's.
    assert kept / keeps >= 0.85


def test_public_figures_stay_and_a_classmate_with_the_same_name_goes():
    text = "Newton's second law again, ask Isaac Brown about it. Martin Luther King spoke in 1963."
    out = scrub(text, names=["Isaac Brown", "Lucas Martin"]).text
    assert "Newton's second law" in out and "Martin Luther King" in out and "1963" in out
    assert "Isaac" not in out and "Brown" not in out


def test_roster_names_that_are_everyday_words_are_only_scrubbed_capitalised():
    out = scrub("Will said I will finish it in May, may I?", names=["Will Hope", "May Chen"]).text
    assert out.count("<PERSON>") == 2
    assert "I will finish" in out and "may I?" in out


def test_counts_are_kept_but_never_the_values():
    result = scrub("I'm Chloe, email chloe.d@gmail.com or 07700 900123", names=[])
    assert result.entities == {"EMAIL_ADDRESS": 1, "PERSON": 1, "PHONE_NUMBER": 1}
    assert "chloe" not in json.dumps(result.entities).lower()


def test_maths_and_formulas_are_not_personal_data():
    text = (
        "What is 1234567 divided by 7? Balance CH4 + O2 -> CO2 + H2O. Is NaCl ionic? See khanacademy.org. "
        "My idea-3 is in the video-12 clip, an ideal 2-step proof."  # "id…" inside words is not an id
    )
    assert scrub(text).text == text
