"""PII scrubbing: recall on labelled corpora of realistic student messages, and the rules
that keep tutoring content (public figures, maths, formulas) intact.

Three corpora, each written by someone who had not seen the recognizers:
pii_corpus.jsonl was used while they were written; pii_corpus_holdout.jsonl was measured
once (93.7%) and then prompted generic fixes (international postcodes, alphanumeric ids,
eponyms); pii_corpus_fresh.jsonl was written after that and never tuned on. A fourth,
pii_corpus_conversations.jsonl, was written with the fixes of issue 10 (conversation-aware
scrubbing, social security numbers, usernames, the language model's false names) and
tuned on. All must meet the targets; the figures are printed and recorded in docs/privacy.md.

A line is one message: `text`, the course's `roster`, the `entities` in it (type and text as
written: that text must be gone), tutoring content to `keep`. Optional: `context`, the raw
text of the conversation's other messages (values found there must be gone from `text` too),
and `unchanged`: the message holds no personal data, so it must come out exactly as it went in.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tutor.privacy import known_values, scrub

pytestmark = pytest.mark.fast

DATA = Path(__file__).parent / "data"
CORPORA = ["pii_corpus.jsonl", "pii_corpus_holdout.jsonl", "pii_corpus_fresh.jsonl", "pii_corpus_conversations.jsonl"]


def recall(corpus: str) -> tuple[Counter, Counter, int, int, list]:
    found, total, kept, keeps, misses = Counter(), Counter(), 0, 0, []
    for line in (DATA / corpus).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        out = scrub(row["text"], names=row["roster"], context=row.get("context", [])).text
        if row.get("unchanged"):
            total["(none: unchanged)"] += 1
            if out == row["text"]:
                found["(none: unchanged)"] += 1
            else:
                misses.append(("(none: unchanged)", out))
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
    untouched, clean = found.pop("(none: unchanged)", 0), total.pop("(none: unchanged)", 0)
    overall = sum(found.values()) / sum(total.values())
    with capsys.disabled():
        print(f"\n{corpus}: entity recall {overall:.1%} ({sum(found.values())}/{sum(total.values())})")
        for kind in sorted(total):
            print(f"  {kind:15} {found[kind]:3}/{total[kind]:3}  {found[kind] / total[kind]:.0%}")
        print(f"  tutoring content kept: {kept}/{keeps} ({kept / keeps:.0%})")
        if clean:
            print(f"  messages without personal data left unchanged: {untouched}/{clean}")
        for kind, text in misses:
            print(f"  missed {kind}: {text!r}")
    assert overall >= 0.95
    assert untouched == clean  # "1 h = 60 min" is no one's name
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


def test_a_second_pass_with_later_values_only_removes_more():
    known = known_values(["my username for the reading app: reader_kid42", "my friend Ben Okafor"], names=[])
    assert known.values == (("USERNAME", "reader_kid42"),) and known.names == ("Ben Okafor",)
    out = known.redact("<PERSON>, log in as reader_kid42 or READER-KID-42; ben okafor can help. <STUDENT_ID>")
    assert out.text == "<PERSON>, log in as <USERNAME> or <USERNAME>; <PERSON> can help. <STUDENT_ID>"
    assert out.entities == {"PERSON": 1, "USERNAME": 2}


def test_the_language_model_names_are_narrowed_to_name_shaped_words():
    text = "Convert 3.7 m to mm. Answer: 5400 mL. Always write the unit! Our SENCo Mrs Leary agreed."
    assert scrub(text).text == text.replace("Leary", "<PERSON>")
