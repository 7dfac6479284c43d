"""Template filters for the training pages: durations and memory sizes in words."""

from __future__ import annotations

from django import template

from training.estimates import duration_words

register = template.Library()


@register.filter
def duration(seconds) -> str:
    return "" if seconds in (None, "") else duration_words(float(seconds))


@register.filter
def gib(size) -> str:
    return "" if size in (None, "") else f"{int(size) / 2**30:.2f} GiB"
