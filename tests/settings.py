"""Test settings: the environment defaults the tests need, then the real settings.

`./run test` points DATABASE_URL at PostgreSQL and REDIS_URL at Redis; these
are the rest of what the test settings need.
"""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-" + "x" * 20)
os.environ.setdefault("PSEUDONYM_SECRET", "test-pseudonym-secret")
os.environ.setdefault("ALLOWED_HOSTS", "localhost,127.0.0.1,testserver")
os.environ.setdefault("DEVLMS_ENABLED", "1")
os.environ.setdefault("TUTOR_VAR_DIR", tempfile.mkdtemp(prefix="tutor-test-var-"))
# The converted demo model is kept between test runs (converting takes half a minute).
_repo = Path(__file__).resolve().parent.parent
os.environ.setdefault("MODEL_PATH", "")  # the demo model, not the production default
os.environ.setdefault("MODEL_DEMO_DIR", str(_repo / "var" / "models" / "smollm2-135m-instruct"))
# Short, deterministic replies keep the real-model tests quick on two CPU cores.
os.environ.setdefault("MODEL_MAX_REPLY_TOKENS", "24")
os.environ.setdefault("MODEL_TEMPERATURE", "0")
# The app's server processes (uvicorn, Celery workers) write email to files in TUTOR_VAR_DIR/outbox,
# which the tests read (in the test process itself Django's test runner keeps mail in memory).
os.environ.setdefault("EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend")

from config.settings import *  # noqa: E402, F403
