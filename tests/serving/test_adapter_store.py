"""The adapter store: each version written once under its name, atomically and checked, never
overwritten by another; replicas resolve adapters from it by name, so a replica started after a
promotion serves the course's new adapter on its first request (the issue's test), and promotions,
rollbacks and retirements reach every replica (a dead one logged, not fatal)."""

from __future__ import annotations

import json
import os
import re
import threading

import httpx
import pytest
import requests
from django.core.management import call_command
from django.core.management.base import CommandError

from serving.adapters import adapter_promote, adapter_register, adapter_rollback, adapter_store, adapters_retire
from serving.client import AdapterError, adapter_smoke, adapter_unload_everywhere, adapter_warm, replica_urls
from serving.model_server import RESOLVER_PLUGIN, base_model_dir, model_server_command
from serving.models import AdapterVersion, adapter_checksum
from serving.store import stored_path
from tests.support import servers
from tests.support.chat import member
from tests.support.models import word_adapter
from tutor.models import Course, Message, Role

NOWHERE = "http://127.0.0.1:9"  # nothing listens there: a replica that is down


def adapter_folder(folder, *, weights: bytes) -> os.PathLike:
    """An adapter folder as training leaves it, trained on another path than the served model's.
    The store handles files and never parses the weights, so these need not be a real LoRA."""
    folder.mkdir(parents=True)
    config = {"peft_type": "LORA", "base_model_name_or_path": "/training/base", "r": 4, "lora_alpha": 4}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "adapter_model.safetensors").write_bytes(weights)
    return folder


@pytest.fixture
def course(settings, tmp_path):
    settings.ADAPTER_STORE_DIR = tmp_path / "store"
    settings.ADAPTER_STORE_DIR.mkdir()
    return member("t1", role=Role.TEACHER).course


def registered(course, folder, weights: bytes = b"weights-1") -> AdapterVersion:
    return adapter_register(course_id=course.pk, path=adapter_folder(folder, weights=weights), base_model="/base")


@pytest.mark.django_db
def test_a_version_is_stored_once_under_its_name_naming_the_served_model(course, tmp_path, settings):
    adapter = registered(course, tmp_path / "trained")
    adapter_store(adapter=adapter)

    copy = stored_path(name=adapter.name)
    assert copy == settings.ADAPTER_STORE_DIR / f"course-{course.pk}-v1"
    # vLLM's resolver takes the folder only if it names the server's --model exactly.
    config = json.loads((copy / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(base_model_dir()) != "/training/base"
    assert config["peft_type"] == "LORA" and config["r"] == 4
    assert (copy / "adapter_model.safetensors").read_bytes() == b"weights-1"
    assert AdapterVersion.objects.get(pk=adapter.pk).stored_sha256 == adapter_checksum(copy) == adapter.stored_sha256
    assert [p.name for p in settings.ADAPTER_STORE_DIR.iterdir()] == [adapter.name]  # no temporary folder left

    written = (copy / "adapter_model.safetensors").stat().st_mtime_ns
    adapter_store(adapter=AdapterVersion.objects.get(pk=adapter.pk))  # again: checked, not written again
    assert (copy / "adapter_model.safetensors").stat().st_mtime_ns == written


@pytest.mark.django_db
def test_a_tampered_or_partial_copy_in_the_store_is_refused_and_never_overwritten(course, tmp_path):
    first = registered(course, tmp_path / "v1")
    adapter_store(adapter=first)
    weights = stored_path(name=first.name) / "adapter_model.safetensors"
    weights.write_bytes(b"tampered")
    with pytest.raises(AdapterError, match="holds a different or incomplete"):
        adapter_store(adapter=AdapterVersion.objects.get(pk=first.pk))
    assert weights.read_bytes() == b"tampered"

    # A folder under the next version's name that is not that adapter (half a copy someone made):
    # the promotion stops before any replica or the course's routing is touched.
    second = registered(course, tmp_path / "v2", weights=b"weights-2")
    partial = stored_path(name=second.name)
    partial.mkdir()
    (partial / "adapter_config.json").write_text("{}")
    with pytest.raises(AdapterError, match="holds a different or incomplete"):
        adapter_promote(adapter=second)
    assert sorted(p.name for p in partial.iterdir()) == ["adapter_config.json"]
    assert AdapterVersion.objects.get(pk=second.pk).status == "candidate"


@pytest.mark.django_db
def test_files_changed_since_registration_are_not_stored(course, tmp_path, settings):
    adapter = registered(course, tmp_path / "trained")
    (tmp_path / "trained" / "adapter_model.safetensors").write_bytes(b"changed")
    with pytest.raises(AdapterError, match="changed since it was registered"):
        adapter_store(adapter=adapter)
    assert not stored_path(name=adapter.name).exists()
    assert list(settings.ADAPTER_STORE_DIR.iterdir()) == []  # nor a temporary folder


@pytest.mark.django_db
def test_reload_stores_a_version_promoted_before_the_store_existed_and_refuses_a_tampered_copy(
    course, tmp_path, settings
):
    settings.VLLM_BASE_URL = NOWHERE  # the warm that follows the store cannot happen: said so
    legacy = registered(course, tmp_path / "v1")
    AdapterVersion.objects.filter(pk=legacy.pk).update(status="active")  # as promoted before the store
    with pytest.raises(CommandError, match="No model server replica answered"):
        call_command("adapters", "reload")
    legacy.refresh_from_db()
    assert legacy.stored_sha256 == adapter_checksum(stored_path(name=legacy.name))

    (stored_path(name=legacy.name) / "adapter_model.safetensors").write_bytes(b"tampered")
    with pytest.raises(CommandError, match="holds a different or incomplete"):
        call_command("adapters", "reload")


@pytest.mark.django_db
def test_a_reader_of_the_store_never_sees_half_an_adapter(course, tmp_path):
    """A replica may look for the folder while it is being written: it is there whole or not at all."""
    weights = os.urandom(48 * 1024 * 1024)
    adapter = registered(course, tmp_path / "big", weights=weights)
    target, seen, done = stored_path(name=adapter.name), [], threading.Event()

    def look() -> None:
        while not done.is_set():
            if target.exists():  # the folder first: once it is there, so must its weights be
                try:
                    seen.append((target / "adapter_model.safetensors").stat().st_size)
                except FileNotFoundError:
                    seen.append(-1)  # the folder without its weights

    reader = threading.Thread(target=look)
    reader.start()
    try:
        adapter_store(adapter=adapter)
    finally:
        done.set()
        reader.join()
    assert seen and set(seen) == {len(weights)}


@pytest.mark.django_db
def test_replicas_are_the_base_url_unless_listed_and_a_dead_one_does_not_fail_an_unload(settings):
    settings.VLLM_BASE_URL = NOWHERE
    assert replica_urls() == [NOWHERE]
    settings.VLLM_REPLICA_URLS = [NOWHERE + "/", "http://127.0.0.1:10"]
    assert replica_urls() == [NOWHERE, "http://127.0.0.1:10"]
    assert adapter_unload_everywhere(name="course-1-v1") == []  # both down: logged, nothing raised
    with pytest.raises(AdapterError, match="No model server replica answered"):
        adapter_warm(name="course-1-v1")


def test_replicas_run_the_store_resolver(settings, tmp_path, monkeypatch):
    settings.MODEL_PATH = "mistralai/Mixtral-8x7B-Instruct-v0.1"  # a hub id: no folder needed here
    settings.ADAPTER_STORE_DIR = tmp_path / "store"
    monkeypatch.setenv("VLLM_PLUGINS", "someone_elses_plugin")
    env = model_server_command().env
    assert env["VLLM_PLUGINS"] == f"someone_elses_plugin,{RESOLVER_PLUGIN}"
    assert env["VLLM_LORA_RESOLVER_CACHE_DIR"] == str(tmp_path / "store")
    assert (tmp_path / "store").is_dir()  # vLLM refuses a missing folder
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"  # the resolver runs only with it


# -- through real vLLM replicas ---------------------------------------------------------------------


CAT_DOG, LEFT_RIGHT = (" cat", " dog"), (" left", " right")


def models_served(vllm_url: str) -> dict[str, dict]:
    return {m["id"]: m for m in httpx.get(vllm_url + "/v1/models").json()["data"]}


def reply_from(tool: str, auth: dict) -> tuple[str, set[str]]:
    """The model vLLM says wrote the reply to a new conversation's question, and the reply's words."""
    conversation = requests.post(tool + "/api/v1/conversations/", headers=auth).json()["id"]
    sent = requests.post(
        f"{tool}/api/v1/conversations/{conversation}/messages/", json={"content": "What is 2 plus 3?"}, headers=auth
    )
    assert sent.status_code == 201, sent.text
    reply = Message.objects.get(pk=sent.json()["reply"]["id"])
    return reply.model_name, set(reply.content.split())


@pytest.mark.django_db(transaction=True)
@pytest.mark.live
@pytest.mark.real_model
def test_a_replica_started_after_a_promotion_serves_the_new_adapter_from_the_store(
    chat_tool, platform, vllm_url, demo_model, tmp_path, settings
):
    settings.MODEL_MAX_REPLY_TOKENS = 16  # these adapters never stop by themselves
    settings.VLLM_REPLICA_URLS = [vllm_url]  # replica A: the only one known at promotion time
    page = platform.launch(requests.Session(), chat_tool, user="student").text
    auth = {"Authorization": "Bearer " + re.search(r'name="launch-token" content="([^"]+)"', page).group(1)}
    course = Course.objects.get()
    first = adapter_register(
        course_id=course.pk,
        path=word_adapter(tmp_path / "a1", base_model=demo_model, words=CAT_DOG),
        base_model=str(demo_model),
    )
    adapter_promote(adapter=first)
    stored = str(stored_path(name=first.name))
    assert models_served(vllm_url)[first.name]["root"] == stored  # A resolved it from the store

    with servers.vllm_server() as replica_b:  # B: started after the promotion, told nothing
        assert first.name not in models_served(replica_b)
        settings.VLLM_BASE_URL = replica_b
        model, words = reply_from(chat_tool, auth)
        assert model == first.name and words and words <= {"cat", "dog"}
        assert models_served(replica_b)[first.name]["root"] == stored  # loaded by B's resolver

        # With both replicas (and a dead third) known: a promotion warms both, a retirement
        # unloads from both, and the dead one is logged, not fatal.
        settings.VLLM_REPLICA_URLS = [vllm_url, replica_b, NOWHERE]
        second = adapter_register(
            course_id=course.pk,
            path=word_adapter(tmp_path / "a2", base_model=demo_model, words=LEFT_RIGHT),
            base_model=str(demo_model),
        )
        adapter_promote(adapter=second)
        assert all(second.name in models_served(url) for url in (vllm_url, replica_b))
        model, words = reply_from(chat_tool, auth)
        assert model == second.name and words and words <= {"left", "right"}

        assert adapter_rollback(course_id=course.pk).pk == first.pk
        assert adapters_retire(names=[second.name]) == [second.name]
        assert not any(second.name in models_served(url) for url in (vllm_url, replica_b))
        model, words = reply_from(chat_tool, auth)
        assert model == first.name and words and words <= {"cat", "dog"}

        # How a replica's resolver fails (vllm's resolve_lora): no folder of that name, 404; a
        # folder that does not load, 400. Last: a failed load must not matter to what follows.
        with pytest.raises(AdapterError, match="found no course-999-v1 in the adapter store"):
            adapter_smoke(name="course-999-v1", base_url=replica_b)
        broken = stored_path(name="course-998-v1")
        broken.mkdir()
        config = json.loads((stored_path(name=first.name) / "adapter_config.json").read_text())
        (broken / "adapter_config.json").write_text(json.dumps(config))
        (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
        with pytest.raises(AdapterError, match=r"did not answer a smoke request .*: 400"):
            adapter_smoke(name="course-998-v1", base_url=replica_b)
        model, _ = reply_from(chat_tool, auth)
        assert model == first.name
