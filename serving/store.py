"""The adapter store: every adapter version, written once under its served name, from which every
vLLM replica loads a course's adapter on the first request naming it (vLLM's filesystem LoRA
resolver, `VLLM_PLUGINS=lora_filesystem_resolver`, `VLLM_LORA_RESOLVER_CACHE_DIR`).

    python manage.py adapters promote --course ID   # writes the version here, then warms the replicas
    python manage.py adapters reload                # writes what is missing, warms the replicas

ADAPTER_STORE_DIR is a directory on storage every replica sees (NFS, a shared volume, or an
S3-compatible bucket mounted or synced there: docs/serving.md). A version is written once: into a
temporary folder inside the store, each file fsynced, checked against its checksum, then renamed
to its name (a rename within one filesystem is atomic), so a replica never sees half an adapter.
A name already in the store is never overwritten: the same adapter there is kept, a different
(tampered, partial) one is refused.

vLLM's resolver takes a folder only if its adapter_config.json's `base_model_name_or_path` is the
server's `--model` argument exactly, so the store's copy names the served model
(serving.model_server.base_model_dir()); every replica must be started with the same --model.
This module writes files only: the registry (serving.adapters) records what it wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from django.conf import settings

from serving.model_server import base_model_dir
from serving.models import ADAPTER_FILES, adapter_checksum, files_checksum


class StoreError(Exception):
    """The store cannot hold this adapter as asked; the message says why."""


def store_dir() -> Path:
    return Path(settings.ADAPTER_STORE_DIR)


def stored_path(*, name: str) -> Path:
    """Where the store keeps the version served as `name` (whether or not it is there yet)."""
    if not name or "/" in name or name.startswith("."):
        raise StoreError(f"{name!r} is not an adapter name the store can hold.")
    return store_dir() / name


def _store_form(*, source: Path, sha256: str) -> dict[str, bytes]:
    """The files the store holds for the adapter registered at `source` with `sha256`: the same
    weights, and its config naming the served base model. The source is read once and checked
    against its registered checksum, so what is written is what was registered."""
    try:
        files = {name: (source / name).read_bytes() for name in ADAPTER_FILES}
    except OSError as exc:
        raise StoreError(f"{source} cannot be read ({exc.__class__.__name__}): {exc}") from exc
    if files_checksum(files) != sha256:
        raise StoreError(f"{source}'s files changed since it was registered; refusing to store them.")
    config = json.loads(files["adapter_config.json"])
    if config.get("peft_type") != "LORA":
        raise StoreError(f"{source} is not a LoRA adapter (peft_type {config.get('peft_type')!r}).")
    config["base_model_name_or_path"] = str(base_model_dir())
    files["adapter_config.json"] = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
    return files


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_folder(folder: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        with open(folder / name, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
    _fsync(folder)  # the folder's entries, before it is renamed into place


def _check_stored(target: Path, expected: str, name: str) -> str:
    """`expected` if the store's copy under `name` is it; a different or partial copy is refused."""
    try:
        found = adapter_checksum(target)
    except OSError:
        found = None  # a file missing: a partial copy
    if found != expected:
        raise StoreError(
            f"The adapter store holds a different or incomplete {name} at {target} (tampered with, or "
            "written by something else); refusing to serve or overwrite it. Remove that folder to have "
            "it written again from the registered adapter."
        )
    return expected


def adapter_store_write(*, name: str, source: Path, sha256: str, stored_sha256: str = "") -> str:
    """Makes sure the store holds the adapter registered at `source` (with `sha256`) under `name`
    and returns the store copy's checksum (what `stored_sha256` records).

    Already there: checked against `stored_sha256` when one was recorded (the source may be gone
    by then), else against the source's store form; a different copy raises StoreError, never
    overwritten. Not there: written atomically and checked after writing."""
    target = stored_path(name=name)
    if target.exists():
        expected = stored_sha256 or files_checksum(_store_form(source=Path(source), sha256=sha256))
        return _check_stored(target, expected, name)
    files = _store_form(source=Path(source), sha256=sha256)
    expected = files_checksum(files)
    store = store_dir()
    store.mkdir(parents=True, exist_ok=True)
    # Inside the store, so the rename below stays within one filesystem (atomic); a dot-name no
    # request names (vLLM resolves a request's model name as a folder of the store).
    # Made with the process's umask, as the files are: replicas may read the store as another user.
    temporary = store / f".{name}.{uuid.uuid4().hex}.tmp"
    temporary.mkdir()
    try:
        _write_folder(temporary, files)
        if adapter_checksum(temporary) != expected:  # read back: a short or failed write is caught here
            raise StoreError(f"{name} did not read back as written in {store}; nothing was stored.")
        try:
            temporary.rename(target)
        except OSError:
            if not target.exists():
                raise
            # Another promotion of the same version stored it first: fine if it is the same adapter.
            return _check_stored(target, expected, name)
        _fsync(store)  # the rename itself, durable
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return _check_stored(target, expected, name)
