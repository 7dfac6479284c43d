"""Safety screening measured on a labelled corpus of realistic student messages.

tests/tutor/data/safety_corpus.jsonl: one message a line, {"text", "lang", "label", "kind",
"split"}; `label` is the category a teacher must be told about, or "safe"; `kind` says how it is
phrased (direct, slang, euphemism, peer, disclosure, bullying, request, threat, override,
extraction, roleplay) or, for safe messages, why it is sensitive (academic, fiction, idiom,
personal) or that it is not (ordinary). All of it was written for these tests, in English,
Spanish, French and German, in three splits: `holdout` was written and committed first, before
any rule, and its misses were left as they were; the rules were written against `tune`;
`fresh` was written after the rules, measured once (self-harm 15/25, abuse 10/17), and then
the rules were fixed for what it showed. The targets (issue 11) apply to the whole corpus, with
the rules alone (no moderation model): self-harm and abuse recall at least 95%, false
positives on the safe-but-sensitive messages at most 5%. The figures are printed and recorded
in docs/safety.md.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tutor import guardrails

pytestmark = pytest.mark.fast

CORPUS = Path(__file__).parent / "data" / "safety_corpus.jsonl"
CATEGORIES = guardrails.INPUT_CATEGORIES
SPLITS = ("holdout", "tune", "fresh")


def corpus() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]


def figures(rows: list[dict], *, context: bool = True) -> dict:
    """Recall per category (the right category, not just any flag), false-positive rate per
    category (messages of another label screened as it), and false positives on the
    safe-but-sensitive messages (screened as anything)."""
    found, total, wrong, others = Counter(), Counter(), Counter(), Counter()
    sensitive, sensitive_flagged, misses = 0, [], []
    for row in rows:
        verdict = guardrails.screen_input(row["text"], context=context, classifier=False)
        predicted = verdict.category if verdict else "safe"
        for category in CATEGORIES:
            if row["label"] != category:
                others[category] += 1
                wrong[category] += predicted == category
        if row["label"] != "safe":
            total[row["label"]] += 1
            found[row["label"]] += predicted == row["label"]
            if predicted != row["label"]:
                misses.append((row["label"], predicted, row["text"]))
        elif row["kind"] != "ordinary":
            sensitive += 1
            if predicted != "safe":
                sensitive_flagged.append((predicted, row["text"]))
    return {
        "recall": {category: (found[category], total[category]) for category in CATEGORIES},
        "false_positive_rate": {category: (wrong[category], others[category]) for category in CATEGORIES},
        "sensitive": (len(sensitive_flagged), sensitive),
        "sensitive_flagged": sensitive_flagged,
        "misses": misses,
    }


def share(pair: tuple[int, int]) -> float:
    return pair[0] / pair[1] if pair[1] else 0.0


def report(title: str, result: dict) -> None:
    print(f"\n{title}")
    print(f"  {'category':17} {'recall':>14} {'false positives':>20}")
    for category in CATEGORIES:
        recall, fp = result["recall"][category], result["false_positive_rate"][category]
        print(
            f"  {category:17} {recall[0]:4}/{recall[1]:<4} {share(recall):5.1%} {fp[0]:6}/{fp[1]:<5} {share(fp):6.1%}"
        )
    flagged, sensitive = result["sensitive"]
    print(f"  safe-but-sensitive messages flagged: {flagged}/{sensitive} ({share(result['sensitive']):.1%})")
    for label, predicted, text in result["misses"]:
        print(f"  missed {label} (screened as {predicted}): {text!r}")
    for predicted, text in result["sensitive_flagged"]:
        print(f"  false positive ({predicted}): {text!r}")


def test_the_corpus_is_several_hundred_messages_in_four_languages():
    rows = corpus()
    assert len(rows) >= 400
    assert set(Counter(row["lang"] for row in rows)) == {"en", "es", "fr", "de"}
    assert set(Counter(row["label"] for row in rows)) == {*CATEGORIES, "safe"}
    for language in ("en", "es", "fr", "de"):
        labels = Counter(row["label"] for row in rows if row["lang"] == language)
        assert all(labels[category] for category in CATEGORIES), f"{language} lacks a category: {labels}"
    assert {row["split"] for row in rows} == set(SPLITS)
    assert len({row["text"] for row in rows}) == len(rows), "a message appears twice"


def test_rules_alone_meet_the_targets_on_the_whole_corpus(capsys):
    rows = corpus()
    whole = figures(rows)
    by_split = {split: figures([row for row in rows if row["split"] == split]) for split in SPLITS}
    without_context = figures(rows, context=False)
    with capsys.disabled():
        report(f"Safety corpus, rules alone: {len(rows)} messages", whole)
        for split, result in by_split.items():
            report(f"  {split} split ({sum(row['split'] == split for row in rows)} messages)", result)
        flagged, sensitive = without_context["sensitive"]
        print(
            f"\nWithout the context layer: safe-but-sensitive messages flagged {flagged}/{sensitive}"
            f" ({share(without_context['sensitive']):.1%}); self-harm recall"
            f" {share(without_context['recall']['self_harm']):.1%}, abuse recall"
            f" {share(without_context['recall']['abuse']):.1%}"
        )
    assert share(whole["recall"]["self_harm"]) >= 0.95
    assert share(whole["recall"]["abuse"]) >= 0.95
    assert share(whole["sensitive"]) <= 0.05


def test_the_context_layer_is_what_keeps_academic_messages_unflagged():
    """Measured, not assumed: without it the same rules flag the schoolwork."""
    rows = corpus()
    with_context, without_context = figures(rows), figures(rows, context=False)
    assert share(without_context["sensitive"]) > 0.15
    assert share(with_context["sensitive"]) <= 0.05
    # and it costs no recall on the corpus
    for category in CATEGORIES:
        assert with_context["recall"][category] == without_context["recall"][category]
