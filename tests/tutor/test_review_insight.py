"""The course review page at scale and its insight: bounded queries with hundreds of exchanges,
search by text (scrubbed copies only) and by student, the topics students ask most, bulk
decisions through the review service, and the CSV export's privacy."""

from __future__ import annotations

import csv
import io

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from tests.support.chat import member
from tests.support.review import review_client_enter, stored_exchanges
from tutor.models import Conversation, Message, ReplyReview, ReviewDecision, ReviewEvent, Role

pytestmark = pytest.mark.django_db

FILLER = [("What is a ratio?", "A comparison of two amounts."), ("And 2:4?", "The same as $1:2$.")]


@pytest.fixture
def course(settings):
    settings.REVIEW_SHOW_NAMES = True
    teacher = member("lms-teacher-7", role=Role.TEACHER, name="Tess Teacher")
    ada = member("lms-student-ada", name="Ada Lovelace")
    bea = member("lms-student-bea", name="Bea Brown")
    client = Client()
    review_client_enter(client, teacher)
    return {"teacher": teacher, "ada": ada, "bea": bea, "client": client, "url": f"/review/{teacher.course_id}/"}


def queries(client: Client, url: str, **params) -> tuple[int, object]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, params)
        if response.streaming:
            response.body = b"".join(response.streaming_content)
    assert response.status_code == 200, response.content[:500] if not response.streaming else response
    return len(captured), response


def test_hundreds_of_exchanges_paginate_and_the_queries_do_not_grow(course):
    client, ada, bea = course["client"], course["ada"], course["bea"]
    for student in (ada, bea) * 3:
        stored_exchanges(student, FILLER)
    small_course, page = queries(client, course["url"])
    assert page.content.count(b'data-testid="conversation-row"') == 6
    conversation = stored_exchanges(ada, FILLER)
    small_conversation, _ = queries(client, f"{course['url']}conversations/{conversation.id}/")
    small_csv, _ = queries(client, f"{course['url']}export.csv")

    for index in range(300):  # 300 conversations more: 600 exchanges, 1,200 messages
        stored_exchanges((ada, bea)[index % 2], FILLER, title=f"Ratios {index}")
    Message.objects.bulk_create(
        [Message(conversation=conversation, sender=sender, content="x", content_scrubbed="x") for sender in "ua" * 60]
    )
    large_course, page = queries(client, course["url"])
    large_conversation, _ = queries(client, f"{course['url']}conversations/{conversation.id}/")
    large_csv, export = queries(client, f"{course['url']}export.csv")

    assert large_course == small_course, "the course page's queries grew with its conversations"
    assert large_conversation == small_conversation, "the conversation page's queries grew with its messages"
    assert large_csv <= small_csv + 2, "the CSV export's queries grew with its rows"  # one chunk per 500 messages
    assert page.content.count(b'data-testid="conversation-row"') == 50
    assert b"307 conversations \xc2\xb7 page 1 of 7" in page.content
    assert len(export.body.decode().splitlines()) == 1 + 307 * 4 + 120
    older = client.get(course["url"], {"page": 7})
    assert older.content.count(b'data-testid="conversation-row"') == 7


def test_search_by_text_reads_scrubbed_copies_only_and_by_student(course):
    client, ada, bea = course["client"], course["ada"], course["bea"]
    told = stored_exchanges(
        ada,
        [
            {
                "question": "I am <PERSON>, what is photosynthesis?",
                "raw_question": "I am Zoltan, what is photosynthesis?",
                "reply": "Plants turning light into sugar.",
            }
        ],
    )
    other = stored_exchanges(bea, [("What is osmosis?", "Water crossing a membrane toward sugar.")])

    def listed(**params) -> set[int]:
        page = client.get(course["url"], params)
        assert page.status_code == 200
        shown = page.content.decode()
        return {row.id for row in Conversation.objects.all() if f'data-conversation="{row.id}"' in shown}

    assert listed(q="photosynthesis") == {told.id}
    assert listed(q="SUGAR") == {told.id, other.id}  # in the replies too, any case
    assert listed(q="Zoltan") == set()  # only the raw text holds the name
    assert listed(student=bea.person.pseudonym[:8]) == {other.id}
    assert listed(student=ada.person.pseudonym[:8], q="sugar") == {told.id}
    refused = client.get(course["url"], {"student": "Ada"})
    assert refused.status_code == 400 and b"student must be the 8 characters" in refused.content


def test_topics_are_the_content_words_of_students_questions(course):
    client, ada, bea = course["client"], course["ada"], course["bea"]
    stored_exchanges(ada, [("What is photosynthesis?", "…"), ("Explain photosynthesis in plants please", "…")])
    stored_exchanges(bea, [("¿Qué es la fotosíntesis de las plantas?", "…"), ("<PERSON> says photosynthesis", "…")])
    stored_exchanges(bea, [("Warum brauchen Pflanzen Licht und Wasser? $\\frac{1}{2}$", "…")])
    page = client.get(course["url"]).content.decode()
    topics = page[page.index('data-testid="topics"') : page.index('data-testid="rated-down"')]
    words = [chunk.split(" <span")[0] for chunk in topics.split('data-testid="topic">')[1:]]
    assert words[0] == "photosynthesis" and "(3)" in topics.split('data-testid="topic">')[1]
    assert {"plants", "fotosíntesis", "plantas", "pflanzen", "licht", "wasser"} <= set(words)
    assert not {"what", "explain", "please", "qué", "las", "warum", "und", "person", "says", "frac"} & set(words)
    assert "5 questions" in topics


def test_bulk_approve_decides_each_undecided_reply_through_the_review_service(course):
    client, ada, bea, teacher = course["client"], course["ada"], course["bea"], course["teacher"]
    first = stored_exchanges(ada, FILLER)
    second = stored_exchanges(bea, FILLER)
    untouched = stored_exchanges(bea, FILLER)
    rejected = first.messages.filter(sender="assistant").first()
    ReplyReview.objects.create(message=rejected, decision=ReviewDecision.REJECTED)

    done = client.post(
        f"{course['url']}bulk/", {"action": "approve", "conversation": [first.id, second.id], "filters": "q=ratio"}
    )
    assert done.status_code == 302 and done.url == f"{course['url']}?q=ratio"
    page = client.get(done.url).content.decode()
    assert "Approved 3 undecided replies in 2 conversations" in page
    decisions = dict(ReplyReview.objects.values_list("message_id", "decision"))
    assert decisions.pop(rejected.id) == ReviewDecision.REJECTED  # a decision already taken stays
    assert sorted(decisions.values()) == [ReviewDecision.APPROVED] * 3
    assert not ReplyReview.objects.filter(message__conversation=untouched).exists()
    events = ReviewEvent.objects.filter(action="reply_review")
    assert sorted(events.values_list("message_id", flat=True)) == sorted(decisions)  # one audit entry each
    assert {event.actor_id for event in events} == {teacher.person_id}

    assert client.post(f"{course['url']}bulk/", {"action": "delete", "conversation": [first.id]}).status_code == 400
    assert client.post(f"{course['url']}bulk/", {"action": "reject"}).status_code == 400


def test_next_unreviewed_follows_the_list_and_skips_decided_conversations(course):
    client, ada = course["client"], course["ada"]
    oldest, middle, newest = (stored_exchanges(ada, FILLER) for _ in range(3))
    for age, conversation in enumerate((newest, middle, oldest)):
        when = conversation.created_at.replace(year=2020 - age)
        Conversation.objects.filter(pk=conversation.pk).update(updated_at=when)
    for reply in middle.messages.filter(sender="assistant"):
        ReplyReview.objects.create(message=reply, decision=ReviewDecision.APPROVED)

    def next_of(conversation) -> str:
        page = client.get(f"{course['url']}conversations/{conversation.id}/").content.decode()
        return page.split('data-testid="next-unreviewed" href="')[1].split('"')[0]

    assert next_of(newest) == f"{course['url']}conversations/{oldest.id}/"  # the approved one skipped
    assert next_of(oldest) == f"{course['url']}conversations/{newest.id}/"  # from the top again
    assert (
        f'href="{course["url"]}conversations/{newest.id}/" data-testid="start-reviewing"'
        in client.get(course["url"]).content.decode()
    )


def test_the_csv_has_scrubbed_text_and_names_as_shown_never_lms_ids_or_raw_text(course):
    client, ada = course["client"], course["ada"]
    conversation = stored_exchanges(
        ada,
        [
            {
                "question": "My email is <EMAIL_ADDRESS>, I'm <PERSON>",
                "raw_question": "My email is ada@school.example, I'm Ada Lovelace",
                "reply": '=HYPERLINK("http://evil") Thanks!',
                "rating": -1,
            }
        ],
    )
    reply = conversation.messages.get(sender="assistant")
    ReplyReview.objects.create(message=reply, helpful=False, correction="Hi Ada", correction_scrubbed="Hi <PERSON>")
    _, response = queries(client, f"{course['url']}export.csv")
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    text = response.body.decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    question, answer = rows
    assert question["text"] == "My email is <EMAIL_ADDRESS>, I'm <PERSON>"
    assert question["student"] == "Ada Lovelace"  # the name the review pages show
    assert question["student_pseudonym"] == ada.person.pseudonym[:8]
    assert answer["text"].startswith("'=HYPERLINK")  # a spreadsheet does not run it
    assert (answer["student_rating"], answer["helpful"], answer["correction"]) == ("-1", "no", "Hi <PERSON>")
    for secret in ("ada@school.example", "lms-student-ada", ada.person.pseudonym, "Hi Ada"):
        assert secret not in text

    filtered = client.get(f"{course['url']}export.csv", {"q": "nothing like it"})
    assert len(b"".join(filtered.streaming_content).decode("utf-8-sig").splitlines()) == 1  # the header
