"""The test database: row counts of every table a launch could write to (to prove a refusal stored
nothing), the rows linked to a person or a conversation through the model graph (to prove an
erasure or a retention sweep left nothing of them), and its URL for server processes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from operator import or_

from django.apps import apps
from django.db import models

LAUNCH_TABLES = [
    "tutor.Course",
    "tutor.Placement",
    "tutor.Person",
    "tutor.Membership",
    "lti_tool.LtiRegistration",
    "lti_tool.LtiDeployment",
    "lti_tool.LtiUser",
    "lti_tool.LtiContext",
    "lti_tool.LtiMembership",
    "lti_tool.LtiResourceLink",
    "sessions.Session",
]


def row_counts() -> dict[str, int]:
    return {label: apps.get_model(label).objects.count() for label in LAUNCH_TABLES}


@dataclass(frozen=True)
class Link:
    """A chain of foreign keys from a model to the target: an ORM lookup of the target's pk, and
    whether every key in it cascades (deleting the target deletes the row)."""

    lookup: str
    cascades: bool


def foreign_keys() -> list[models.ForeignKey]:
    """Every foreign key and one-to-one of every installed model, many-to-many tables included."""
    return [
        field
        for model in apps.get_models(include_auto_created=True)
        for field in model._meta.get_fields()
        if field.concrete and (field.many_to_one or field.one_to_one)
    ]


def links_to(target: type[models.Model]) -> dict[type[models.Model], list[Link]]:
    """Every model with a chain of foreign keys to `target`, read from the model graph (so a table
    added later is found without being listed), with each of its chains."""
    found: dict[type[models.Model], list[Link]] = {target: [Link("pk", cascades=True)]}
    keys = foreign_keys()
    frontier = [(target, Link("pk", cascades=True), frozenset({target}))]
    while frontier:
        model, link, chain = frontier.pop()
        for field in keys:
            holder = field.model
            if field.related_model is not model or holder in chain:
                continue
            lookup = field.name if link.lookup == "pk" else f"{field.name}__{link.lookup}"
            extended = Link(lookup, cascades=link.cascades and field.remote_field.on_delete is models.CASCADE)
            found.setdefault(holder, []).append(extended)
            frontier.append((holder, extended, chain | {holder}))
    return found


def owned_by(target: type[models.Model]) -> list[type[models.Model]]:
    """The models whose rows belong to a row of `target`: a chain of cascading keys leads to it."""
    return [model for model, links in links_to(target).items() if any(link.cascades for link in links)]


def rows_linked(target: type[models.Model], pk: int) -> dict[str, frozenset]:
    """Per table (app_label.Model), the pks of the rows any chain of foreign keys leads from to
    this row of `target`; every table with a chain is listed, an empty set where no row is linked."""
    return {
        model._meta.label: frozenset(
            model._default_manager.filter(reduce(or_, (models.Q(**{link.lookup: pk}) for link in links)))
            .values_list("pk", flat=True)
            .distinct()
        )
        for model, links in links_to(target).items()
    }


def database_url_for_tests() -> str:
    """The test database (pytest-django's) as a URL, for the server processes the tests start."""
    from django.db import connection

    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
