"""The model-server client: the only code that talks to vLLM.

Replies (whole or streamed), prompt sizes, moderation labels, and the adapters vLLM holds
(listed, warmed on every replica through the store's resolver, loaded by path, unloaded
everywhere, smoke-tested). Replies go to VLLM_BASE_URL (one server, or a router in front of
several); adapter operations go to each of VLLM_REPLICA_URLS. vLLM speaks the OpenAI API, so replies use the
`openai` package (sync for JSON replies, async for streams) against `VLLM_BASE_URL/v1`;
vLLM's own endpoints (`/tokenize`, `/v1/load_lora_adapter`, `/v1/unload_lora_adapter`) use
httpx. Our timeouts, no hidden retries: a reply that fails becomes `ModelServerUnavailable`
(the chat turns it into a clear 503 and keeps the student's message), an adapter operation that
fails becomes `AdapterError`. Replies carry their course as a router's routing key
(`routing_headers`).

Layers (see .importlinter): serving.tasks -> serving.adapters (the registry: promote, roll
back, retire) -> this client -> serving.models. The client reads the registry's table itself
to route a course (`model_for_course`) and to warm adapters again after a replica restarts
(`adapters_reload`); it never writes it. serving imports nothing from the other apps.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from functools import cache

import httpx
import openai
from asgiref.sync import sync_to_async
from django.conf import settings

from serving.metrics import load_measured
from serving.models import AdapterVersion
from serving.selectors import active_adapter_name

logger = logging.getLogger(__name__)


class ModelServerUnavailable(Exception):
    """The model server could not give a reply; the message says why in plain words."""


class AdapterError(Exception):
    """A promotion, rollback or load that could not be done; the message says why."""


@dataclass(frozen=True)
class PromptSize:
    """A prompt measured in the served model's own tokens, against its context window."""

    tokens: int
    context_tokens: int

    def fits(self, *, reply_tokens: int) -> bool:
        return self.tokens + reply_tokens <= self.context_tokens


@dataclass(frozen=True)
class Reply:
    content: str
    finish_reason: str | None
    model: str  # the name vLLM says answered (the adapter's, or the base model's)


@dataclass(frozen=True)
class ReplyPiece:
    text: str
    model: str  # as vLLM reports it on the chunk


def _timeout() -> httpx.Timeout:
    return httpx.Timeout(settings.MODEL_REPLY_TIMEOUT_SECONDS, connect=settings.MODEL_CONNECT_TIMEOUT_SECONDS)


@cache
def _sync_client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=_timeout())


_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, openai.AsyncOpenAI]] = (
    weakref.WeakKeyDictionary()
)


def _async_client(base_url: str) -> openai.AsyncOpenAI:
    """One client (one connection pool) per event loop and server: httpx's async pool is bound to
    the loop that made it, and making a client per stream costs milliseconds of every reply's start."""
    per_loop = _async_clients.setdefault(asyncio.get_running_loop(), {})
    if base_url not in per_loop:
        per_loop[base_url] = openai.AsyncOpenAI(
            base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=_timeout()
        )
    return per_loop[base_url]


def _unavailable(exc: Exception) -> ModelServerUnavailable:
    if isinstance(exc, openai.APITimeoutError):
        message = "The tutor took too long to answer. Your message is saved; try again."
    elif isinstance(exc, openai.APIStatusError):
        message = (
            f"The tutor's model server answered with an error ({exc.status_code}). Your message is saved; try again."
        )
    else:
        message = "The tutor's model server cannot be reached. Your message is saved; try again in a moment."
    return ModelServerUnavailable(message)


def routing_headers(course_id: int | None) -> dict[str, str]:
    """The course as the routing key of a router in front of several replicas: vllm-router's
    `consistent_hash` policy sends every request with the same X-Tenant-ID to the same replica,
    so a course's adapter stays loaded, and its prompts' prefix cached, on one replica (and its
    requests move together when that replica dies). The course, not the adapter version: a
    promotion keeps the course where it is. One vLLM server without a router ignores it."""
    return {} if course_id is None else {"X-Tenant-ID": f"course-{course_id}"}


def _request(model: str, messages: list[dict], course_id: int | None) -> dict:
    return {
        "model": model,
        "messages": messages,
        "max_tokens": settings.MODEL_MAX_REPLY_TOKENS,
        "temperature": settings.MODEL_TEMPERATURE,
        "extra_headers": routing_headers(course_id),
    }


def _adapter_missing(exc: Exception, model: str) -> bool:
    """vLLM answers 404 for an adapter it does not have (it restarted and lost its adapters)."""
    return isinstance(exc, openai.NotFoundError) and model != settings.MODEL_SERVED_NAME


def _reload_adapters() -> None:
    try:
        adapters_reload()
    except AdapterError as exc:
        raise ModelServerUnavailable(f"The course's tutor could not be loaded again: {exc}") from exc


def chat_complete(*, model: str, messages: list[dict], course_id: int | None = None) -> Reply:
    """The whole reply at once; `course_id` routes it (routing_headers)."""
    client = _sync_client(settings.VLLM_BASE_URL)
    try:
        try:
            completion = client.chat.completions.create(**_request(model, messages, course_id))
        except openai.OpenAIError as exc:
            if not _adapter_missing(exc, model):
                raise
            _reload_adapters()
            completion = client.chat.completions.create(**_request(model, messages, course_id))
    except openai.OpenAIError as exc:
        raise _unavailable(exc) from exc
    choice = completion.choices[0]
    return Reply(content=choice.message.content or "", finish_reason=choice.finish_reason, model=completion.model)


async def chat_stream(*, model: str, messages: list[dict], course_id: int | None = None) -> AsyncIterator[ReplyPiece]:
    """The reply as it is generated, piece by piece, each with the model vLLM says produced it;
    `course_id` routes it (routing_headers)."""
    client = _async_client(settings.VLLM_BASE_URL)
    try:
        try:
            stream = await client.chat.completions.create(**_request(model, messages, course_id), stream=True)
        except openai.OpenAIError as exc:
            if not _adapter_missing(exc, model):
                raise
            await sync_to_async(_reload_adapters)()
            stream = await client.chat.completions.create(**_request(model, messages, course_id), stream=True)
        # Leaving the block early (the student left) closes the response, which makes vLLM abort the request.
        async with stream:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield ReplyPiece(text=chunk.choices[0].delta.content, model=chunk.model)
    except openai.OpenAIError as exc:
        raise _unavailable(exc) from exc


@cache
def _http_client(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=_timeout())


def prompt_size(*, messages: list[dict], course_id: int | None = None) -> PromptSize:
    """The chat prompt's length as the model server counts it: vLLM's `/tokenize` applies the served
    model's own tokenizer and chat template, so the count is exact for any base model (a character
    count is not: 4,000 emoji are over 4,000 tokens). Adapters share the base model's tokenizer.
    `course_id` routes it like the course's replies (without a key a router sends every count to
    one replica)."""
    try:
        response = _http_client(settings.VLLM_BASE_URL).post(
            "/tokenize",
            json={"model": settings.MODEL_SERVED_NAME, "messages": messages},
            headers=routing_headers(course_id),
        )
        response.raise_for_status()
        body = response.json()
        return PromptSize(tokens=int(body["count"]), context_tokens=int(body["max_model_len"]))
    except httpx.TimeoutException as exc:
        raise ModelServerUnavailable("The tutor took too long to answer. Your message is saved; try again.") from exc
    except httpx.HTTPStatusError as exc:
        raise ModelServerUnavailable(
            f"The tutor's model server answered with an error ({exc.response.status_code}). "
            "Your message is saved; try again."
        ) from exc
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        raise ModelServerUnavailable(
            "The tutor's model server cannot be reached. Your message is saved; try again in a moment."
        ) from exc


@cache
def _moderation_client(base_url: str, timeout_seconds: float) -> openai.OpenAI:
    timeout = httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, settings.MODEL_CONNECT_TIMEOUT_SECONDS))
    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=timeout)


def moderation_classify(*, instructions: str, text: str, labels: Sequence[str]) -> str:
    """One of `labels` for `text`, as the served base model judges it under `instructions`.

    The base model, never a course's adapter (adapters are tutors, not classifiers); greedy;
    vLLM's structured outputs restrict the answer to the labels, and an answer that is still
    no label counts as a failure. MODERATION_TIMEOUT_SECONDS bounds the whole call, so a
    slow server costs the chat that long at most. Raises ModelServerUnavailable."""
    client = _moderation_client(settings.VLLM_BASE_URL, settings.MODERATION_TIMEOUT_SECONDS)
    try:
        completion = client.chat.completions.create(
            model=settings.MODEL_SERVED_NAME,
            messages=[
                {"role": "system", "content": instructions},
                {"role": "user", "content": text},
            ],
            max_tokens=16,
            temperature=0,
            extra_body={"structured_outputs": {"choice": list(labels)}},
            # No course to route on: a key of its own, or vllm-router (0.1.17) hashes every keyless
            # request alike and sends every classification in the district to one replica.
            extra_headers={"X-Request-ID": uuid.uuid4().hex},
        )
    except openai.OpenAIError as exc:
        raise _unavailable(exc) from exc
    answer = (completion.choices[0].message.content or "").strip().strip(".").lower()
    if answer not in labels:
        raise ModelServerUnavailable(f"The moderation model answered with no label ({answer[:40]!r}).")
    return answer


def model_for_course(*, course_id: int) -> str:
    """The model name a course's requests use: its active adapter, else the base model."""
    return active_adapter_name(course_id=course_id) or settings.MODEL_SERVED_NAME


# -- the adapters vLLM holds ----------------------------------------------------------------------


class ReplicaUnreachable(AdapterError):
    """A replica that did not answer at all (down, restarting): skipped by warms and unloads."""


def _unreachable(base_url: str, exc: Exception) -> ReplicaUnreachable:
    return ReplicaUnreachable(f"The model server at {base_url} cannot be reached ({exc.__class__.__name__}).")


def replica_urls() -> list[str]:
    """Every vLLM replica adapters are warmed on and unloaded from: VLLM_REPLICA_URLS, else the one
    server at VLLM_BASE_URL. A replica missing here still serves any adapter: it resolves it from
    the store on the first request naming it."""
    return [url.rstrip("/") for url in settings.VLLM_REPLICA_URLS] or [settings.VLLM_BASE_URL]


def _adapter_post(endpoint: str, body: dict, base_url: str) -> httpx.Response:
    try:
        return _http_client(base_url).post(endpoint, json=body)
    except httpx.HTTPError as exc:
        raise _unreachable(base_url, exc) from exc


def adapters_loaded(*, base_url: str | None = None) -> set[str]:
    """The adapters a replica (by default VLLM_BASE_URL's) serves now, the base model left out."""
    base_url = base_url or settings.VLLM_BASE_URL
    try:
        response = _http_client(base_url).get("/v1/models", timeout=settings.MODEL_CONNECT_TIMEOUT_SECONDS)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise _unreachable(base_url, exc) from exc
    return {model["id"] for model in response.json()["data"] if model["id"] != settings.MODEL_SERVED_NAME}


@load_measured
def adapter_load(adapter: AdapterVersion, *, base_url: str | None = None) -> None:
    """Pushes the adapter's registered folder into one replica by path (a no-op when it is loaded
    there): for a candidate being evaluated, which is not in the store, and for a version
    promoted before the store existed. Promoted versions are resolved from the store instead."""
    if not adapter.files_intact():
        raise AdapterError(f"{adapter.name}'s files changed since it was registered; refusing to load them.")
    base_url = base_url or settings.VLLM_BASE_URL
    response = _adapter_post("/v1/load_lora_adapter", {"lora_name": adapter.name, "lora_path": adapter.path}, base_url)
    if response.status_code == 400 and "already" in response.text.lower():
        return
    if response.status_code != 200:
        raise AdapterError(f"vLLM refused to load {adapter.name}: {response.status_code} {response.text[:300]}")


def adapter_unload(name: str, *, base_url: str | None = None) -> None:
    """Unloads `name` from one replica (nothing to do where it is not loaded)."""
    response = _adapter_post("/v1/unload_lora_adapter", {"lora_name": name}, base_url or settings.VLLM_BASE_URL)
    if response.status_code not in (200, 400, 404):
        raise AdapterError(f"vLLM refused to unload {name}: {response.status_code} {response.text[:300]}")


def adapter_unload_everywhere(*, name: str) -> list[str]:
    """Unloads `name` from every replica; returns those it was unloaded from. A replica that is
    down is logged and skipped (when it comes back it has nothing loaded); a refusal is raised
    once every replica was tried."""
    done, refused = [], []
    for url in replica_urls():
        try:
            adapter_unload(name, base_url=url)
            done.append(url)
        except ReplicaUnreachable as exc:
            logger.warning("could not unload %s: %s", name, exc)
        except AdapterError as exc:
            refused.append(str(exc))
    if refused:
        raise AdapterError("; ".join(refused))
    return done


def adapter_smoke(*, name: str, base_url: str | None = None) -> None:
    """A two-token request to an adapter by name, which vLLM must say it answered itself. On a
    replica running the store's resolver this is also what loads the adapter there (its first
    request naming it): vLLM answers 404 when the store has no usable folder of that name, 400
    when it has one that would not load (vllm.entrypoints.openai.models.serving.resolve_lora)."""
    base_url = base_url or settings.VLLM_BASE_URL
    try:
        completion = _sync_client(base_url).chat.completions.create(
            model=name, messages=[{"role": "user", "content": "Hello"}], max_tokens=2
        )
    except openai.APIConnectionError as exc:
        if isinstance(exc, openai.APITimeoutError):
            raise AdapterError(f"{name} did not answer a smoke request at {base_url} in time") from exc
        raise _unreachable(base_url, exc) from exc
    except openai.NotFoundError as exc:
        raise AdapterError(
            f"{base_url} found no {name} in the adapter store (is it started with the store's resolver on "
            "ADAPTER_STORE_DIR, and with the --model the stored copy names?)"
        ) from exc
    except openai.OpenAIError as exc:
        status = getattr(exc, "status_code", exc.__class__.__name__)
        raise AdapterError(f"{name} did not answer a smoke request at {base_url}: {status}") from exc
    if completion.model != name:
        raise AdapterError(f"{name} did not answer a smoke request at {base_url}: {completion.model} answered")


@load_measured
def adapter_warm(*, name: str) -> list[str]:
    """One smoke request for `name` on every live replica, each of which resolves it from the
    store: it answers there before any student is routed to it. Returns the replicas warmed; a
    replica that is down is logged and skipped (it resolves the adapter when a request comes), a
    replica that answers but cannot serve it fails the warm, and so does no replica answering."""
    warmed, down = [], []
    for url in replica_urls():
        try:
            adapter_smoke(name=name, base_url=url)
            warmed.append(url)
        except ReplicaUnreachable as exc:
            logger.warning("did not warm %s: %s", name, exc)
            down.append(url)
    if not warmed:
        raise ReplicaUnreachable(f"No model server replica answered ({', '.join(down)}); {name} was not warmed.")
    return warmed


def adapters_reload(*, skip: Collection[str] = ()) -> list[str]:
    """Every active and previous version (but those in `skip`) warmed on every live replica that
    does not hold it yet (after a restart, or a replica added): through the store's resolver, or,
    for a version promoted before the store existed (none recorded), pushed by path. Returns the
    names warmed somewhere; raises ReplicaUnreachable when no replica answers (the app's start-up
    waits on that)."""
    kept = list(AdapterVersion.objects.filter(status__in=AdapterVersion.KEPT_LOADED).exclude(name__in=skip))
    warmed: set[str] = set()
    down = []
    for url in replica_urls():
        try:
            have = adapters_loaded(base_url=url)
            for adapter in kept:
                if adapter.name in have:
                    continue
                if adapter.stored_sha256:
                    adapter_smoke(name=adapter.name, base_url=url)
                else:
                    adapter_load(adapter, base_url=url)
                warmed.add(adapter.name)
        except ReplicaUnreachable as exc:
            logger.warning("could not reload adapters: %s", exc)
            down.append(url)
    if len(down) == len(replica_urls()):
        raise ReplicaUnreachable(f"No model server replica answered ({', '.join(down)}).")
    if warmed:
        logger.info("warmed %s on the model server replicas", sorted(warmed))
    return sorted(warmed)


# -- each replica's health (GET /health/ reports them) ----------------------------------------------


@dataclass(frozen=True)
class ReplicaHealth:
    url: str
    ok: bool
    reason: str  # in plain words; empty when ok
    adapters: tuple[str, ...] = ()  # the adapters it serves now (the base model left out)


def replica_health(*, url: str, timeout: float) -> ReplicaHealth:
    """One replica, asked directly (never through a router): vLLM's own `/health` (200 while its
    engine runs, 503 once it died) and the adapters its `/v1/models` lists."""
    try:
        with httpx.Client(base_url=url, timeout=timeout) as http:
            health = http.get("/health")
            if health.status_code != 200:
                dead = " (its engine died)" if health.status_code == 503 else ""
                return ReplicaHealth(url=url, ok=False, reason=f"vLLM's /health answered {health.status_code}{dead}")
            models = http.get("/v1/models")
            models.raise_for_status()
            names = [model["id"] for model in models.json()["data"]]
    except httpx.ConnectError:
        return ReplicaHealth(url=url, ok=False, reason="nothing answers there (connection refused)")
    except httpx.TimeoutException:
        return ReplicaHealth(url=url, ok=False, reason=f"no answer within {timeout:g} s")
    except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
        # How a server that dies, or one that holds its port while it starts, looks from here.
        return ReplicaHealth(url=url, ok=False, reason="the connection was cut (stopping or starting)")
    except httpx.HTTPStatusError as exc:
        return ReplicaHealth(url=url, ok=False, reason=f"vLLM's /v1/models answered {exc.response.status_code}")
    except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
        return ReplicaHealth(url=url, ok=False, reason=f"it did not answer as vLLM does ({exc.__class__.__name__})")
    adapters = tuple(sorted(name for name in names if name != settings.MODEL_SERVED_NAME))
    return ReplicaHealth(url=url, ok=True, reason="", adapters=adapters)
