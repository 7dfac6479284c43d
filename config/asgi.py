"""ASGI entry point: `uvicorn config.asgi:application`."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_asgi_application()

# Load the URLconf (and the API's imports) now, not on the first request.
from django.urls import get_resolver  # noqa: E402

_url_patterns = get_resolver().url_patterns

# The PII scrubber (Presidio + spaCy) takes seconds to load: start it beside the server, so the
# first student message does not wait for it (the scrubber's own lock covers a race).
import threading  # noqa: E402

from tutor import privacy  # noqa: E402

threading.Thread(target=privacy.scrubber, name="scrubber-warmup", daemon=True).start()


def _adapters_reload_when_served() -> None:
    """Every active adapter warmed on each vLLM replica once one answers (a restarted replica
    resolves them from the adapter store by itself; this spares the first students the load)."""
    import time

    from django.db import connection

    from serving.client import AdapterError, adapters_reload

    try:
        for _ in range(60):
            try:
                adapters_reload()
                return
            except AdapterError:
                time.sleep(5)
            except Exception:  # the database may not be migrated yet; the first 404 reloads too
                return
    finally:
        connection.close()  # this thread's own connection, not left open for the server's lifetime


threading.Thread(target=_adapters_reload_when_served, name="adapters-reload", daemon=True).start()
