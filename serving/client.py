"""The model-server client: the only code that talks to vLLM.

Replies (whole or streamed), prompt sizes, moderation labels, and the adapters vLLM holds
(listed, loaded, unloaded, smoke-tested). vLLM speaks the OpenAI API, so replies use the
`openai` package (sync for JSON replies, async for streams) against `VLLM_BASE_URL/v1`;
vLLM's own endpoints (`/tokenize`, `/v1/load_lora_adapter`, `/v1/unload_lora_adapter`) use
httpx. Our timeouts, no hidden retries: a reply that fails becomes `ModelServerUnavailable`
(the chat turns it into a clear 503 and keeps the student's message), an adapter operation that
fails becomes `AdapterError`.

Layers (see .importlinter): serving.tasks -> serving.adapters (the registry: promote, roll
back, retire) -> this client -> serving.models. The client reads the registry's table itself
to route a course (`model_for_course`) and to load adapters again after vLLM restarts
(`adapters_reload`); it never writes it. serving imports nothing from the other apps.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from functools import cache

import httpx
import openai
from asgiref.sync import sync_to_async
from django.conf import settings

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


def _request(model: str, messages: list[dict]) -> dict:
    return {
        "model": model,
        "messages": messages,
        "max_tokens": settings.MODEL_MAX_REPLY_TOKENS,
        "temperature": settings.MODEL_TEMPERATURE,
    }


def _adapter_missing(exc: Exception, model: str) -> bool:
    """vLLM answers 404 for an adapter it does not have (it restarted and lost its adapters)."""
    return isinstance(exc, openai.NotFoundError) and model != settings.MODEL_SERVED_NAME


def _reload_adapters() -> None:
    try:
        adapters_reload()
    except AdapterError as exc:
        raise ModelServerUnavailable(f"The course's tutor could not be loaded again: {exc}") from exc


def chat_complete(*, model: str, messages: list[dict]) -> Reply:
    """The whole reply at once."""
    client = _sync_client(settings.VLLM_BASE_URL)
    try:
        try:
            completion = client.chat.completions.create(**_request(model, messages))
        except openai.OpenAIError as exc:
            if not _adapter_missing(exc, model):
                raise
            _reload_adapters()
            completion = client.chat.completions.create(**_request(model, messages))
    except openai.OpenAIError as exc:
        raise _unavailable(exc) from exc
    choice = completion.choices[0]
    return Reply(content=choice.message.content or "", finish_reason=choice.finish_reason, model=completion.model)


async def chat_stream(*, model: str, messages: list[dict]) -> AsyncIterator[ReplyPiece]:
    """The reply as it is generated, piece by piece, each with the model vLLM says produced it."""
    client = _async_client(settings.VLLM_BASE_URL)
    try:
        try:
            stream = await client.chat.completions.create(**_request(model, messages), stream=True)
        except openai.OpenAIError as exc:
            if not _adapter_missing(exc, model):
                raise
            await sync_to_async(_reload_adapters)()
            stream = await client.chat.completions.create(**_request(model, messages), stream=True)
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


def prompt_size(*, messages: list[dict]) -> PromptSize:
    """The chat prompt's length as the model server counts it: vLLM's `/tokenize` applies the served
    model's own tokenizer and chat template, so the count is exact for any base model (a character
    count is not: 4,000 emoji are over 4,000 tokens). Adapters share the base model's tokenizer."""
    try:
        response = _http_client(settings.VLLM_BASE_URL).post(
            "/tokenize", json={"model": settings.MODEL_SERVED_NAME, "messages": messages}
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


# -- the adapters vLLM holds -----------------------------------------------------------------------


def _adapter_post(endpoint: str, body: dict) -> httpx.Response:
    try:
        return _http_client(settings.VLLM_BASE_URL).post(endpoint, json=body)
    except httpx.HTTPError as exc:
        raise AdapterError(f"The model server cannot be reached ({exc.__class__.__name__}).") from exc


def adapters_loaded() -> set[str]:
    """The adapters vLLM serves now (the base model left out)."""
    try:
        response = _http_client(settings.VLLM_BASE_URL).get(
            "/v1/models", timeout=settings.MODEL_CONNECT_TIMEOUT_SECONDS
        )
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise AdapterError(f"The model server cannot be reached ({exc.__class__.__name__}).") from exc
    return {model["id"] for model in response.json()["data"] if model["id"] != settings.MODEL_SERVED_NAME}


def adapter_load(adapter: AdapterVersion) -> None:
    """Loads the adapter into vLLM (a no-op when it is already loaded)."""
    if not adapter.files_intact():
        raise AdapterError(f"{adapter.name}'s files changed since it was registered; refusing to load them.")
    response = _adapter_post("/v1/load_lora_adapter", {"lora_name": adapter.name, "lora_path": adapter.path})
    if response.status_code == 400 and "already" in response.text.lower():
        return
    if response.status_code != 200:
        raise AdapterError(f"vLLM refused to load {adapter.name}: {response.status_code} {response.text[:300]}")


def adapter_unload(name: str) -> None:
    response = _adapter_post("/v1/unload_lora_adapter", {"lora_name": name})
    if response.status_code not in (200, 400, 404):
        raise AdapterError(f"vLLM refused to unload {name}: {response.status_code} {response.text[:300]}")


def adapter_smoke(*, name: str) -> None:
    """A two-token request to a loaded adapter, which vLLM must say it answered itself."""
    try:
        completion = _sync_client(settings.VLLM_BASE_URL).chat.completions.create(
            model=name, messages=[{"role": "user", "content": "Hello"}], max_tokens=2
        )
    except openai.OpenAIError as exc:
        status = getattr(exc, "status_code", exc.__class__.__name__)
        raise AdapterError(f"{name} did not answer a smoke request: {status}") from exc
    if completion.model != name:
        raise AdapterError(f"{name} did not answer a smoke request: {completion.model} answered")


def adapters_reload() -> list[str]:
    """Loads every active and previous adapter that vLLM does not have (after a restart)."""
    have = adapters_loaded()
    loaded = []
    for adapter in AdapterVersion.objects.filter(status__in=AdapterVersion.KEPT_LOADED):
        if adapter.name not in have:
            adapter_load(adapter)
            loaded.append(adapter.name)
    if loaded:
        logger.info("loaded %s into the model server", loaded)
    return loaded
