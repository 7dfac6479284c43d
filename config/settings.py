"""Django settings, read from the environment.

Every setting below names its environment variable and its default; the same
table, with what each one is for, is in docs/configuration.md. Defaults are the
embedded demo (SQLite, database cache, no external service); production sets
PUBLIC_BASE_URL to an https URL, SECRET_KEY, PSEUDONYM_SECRET and DATABASE_URL.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("TUTOR_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), not {value!r}")


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def _secret(name: str) -> str:
    """A secret from the environment; in debug mode one is made once and kept in var/."""
    value = os.environ.get(name)
    if value:
        return value
    if not DEBUG:
        raise ImproperlyConfigured(
            f"{name} must be set when DJANGO_DEBUG is off (generate one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`)."
        )
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    path = VAR_DIR / f"{name.lower()}.txt"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = _secret("SECRET_KEY")
# Keyed hash for pseudonymous student ids; separate from SECRET_KEY so rotating
# the session key never re-identifies or orphans anyone's data.
PSEUDONYM_SECRET = _secret("PSEUDONYM_SECRET")

# The URL the LMS and browsers reach the tool at; every tool-side LTI URL is built from it.
PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
_public = urlsplit(PUBLIC_BASE_URL)
if _public.scheme not in {"http", "https"} or not _public.hostname:
    raise ImproperlyConfigured(f"PUBLIC_BASE_URL must be an http(s) URL, not {PUBLIC_BASE_URL!r}")
PUBLIC_IS_HTTPS = _public.scheme == "https"

ALLOWED_HOSTS = [_public.hostname, *env_list("ALLOWED_HOSTS")]
if DEBUG:
    ALLOWED_HOSTS += ["127.0.0.1", "localhost", "[::1]"]

# Development LMS (a fake platform for the demo and tests); never in production.
DEVLMS_ENABLED = env_bool("DEVLMS_ENABLED", DEBUG)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    # Our lti app comes before lti_tool so its rotate_keys command replaces django-lti's.
    "lti",
    "lti_tool",
    "tutor",
    "serving",
    "training",
]
if DEVLMS_ENABLED:
    INSTALLED_APPS.append("devlms")

MIDDLEWARE = [
    "tutor.errors.ApiErrorShapeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "tutor.errors.DomainErrorMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'tutor.sqlite3'}"),
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "0")),
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # The embedded default must take a class chatting at once. WAL lets readers go on while one
    # connection writes; IMMEDIATE takes the write lock when a transaction begins, so two writers
    # queue on the busy timeout instead of one failing at once with "database is locked" (which
    # a deferred transaction that reads and then writes cannot wait out).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": float(os.environ.get("DATABASE_SQLITE_TIMEOUT_SECONDS", "30")),
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )

# The cache holds OIDC state/nonces, used nonces and platforms' key sets, so it
# must be shared by every web process: Redis in production, the database otherwise.
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "tutor_cache"}}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
# In debug (the demo) static files are served straight from the apps; production runs collectstatic.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# --- Security -----------------------------------------------------------------
# Inside an LMS iframe the tool is a third party: cookies must be SameSite=None;
# Secure, which browsers accept over HTTPS only. Over plain http (the demo) they
# stay Lax and the launch token carries the session instead.
SESSION_COOKIE_SECURE = PUBLIC_IS_HTTPS
CSRF_COOKIE_SECURE = PUBLIC_IS_HTTPS
SESSION_COOKIE_SAMESITE = "None" if PUBLIC_IS_HTTPS else "Lax"
CSRF_COOKIE_SAMESITE = "None" if PUBLIC_IS_HTTPS else "Lax"
SESSION_COOKIE_HTTPONLY = True
CSRF_TRUSTED_ORIGINS = [f"{_public.scheme}://{_public.netloc}"]
X_FRAME_OPTIONS = "DENY"  # pages meant for the LMS iframe override this with CSP frame-ancestors
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if env_bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
if PUBLIC_IS_HTTPS:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", str(60 * 60 * 24 * 365)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)

# --- LTI ----------------------------------------------------------------------
# Origins (besides the registered platforms' own) allowed to frame the tool, for
# LMSs whose pages live on another host than their issuer (Canvas: your school's
# canvas domain).
LTI_EXTRA_FRAME_ANCESTORS = env_list("LTI_EXTRA_FRAME_ANCESTORS")
# Audiences besides our own client id that a launch's `aud` may name.
LTI_TRUSTED_AUDIENCES = env_list("LTI_TRUSTED_AUDIENCES")
# How long a platform's key set is cached before it is fetched again (seconds).
LTI_KEYSET_CACHE_SECONDS = int(os.environ.get("LTI_KEYSET_CACHE_SECONDS", "3600"))
# A token naming an unknown kid makes us fetch the key set again; a kid still missing after that
# fetch is refused without fetching for this long (seconds; per kid, not per key set).
LTI_KEYSET_REFETCH_MIN_SECONDS = int(os.environ.get("LTI_KEYSET_REFETCH_MIN_SECONDS", "30"))
# Timeout for fetching a platform's key set or openid configuration (seconds).
LTI_HTTP_TIMEOUT_SECONDS = float(os.environ.get("LTI_HTTP_TIMEOUT_SECONDS", "10"))
# After rotation, how long a superseded tool key stays in the JWKS (days).
LTI_KEY_RETIRE_AFTER_DAYS = int(os.environ.get("LTI_KEY_RETIRE_AFTER_DAYS", "7"))
# Lifetime of the signed launch token that authenticates API calls (seconds).
LAUNCH_TOKEN_MAX_AGE = int(os.environ.get("LAUNCH_TOKEN_MAX_AGE", str(2 * 60 * 60)))
# Accept LTI Dynamic Registration at /lti/register/ (registrations arrive inactive).
LTI_DYNAMIC_REGISTRATION_ENABLED = env_bool("LTI_DYNAMIC_REGISTRATION_ENABLED", True)
TOOL_TITLE = os.environ.get("TOOL_TITLE", "AI Tutor")

# --- Model serving (serving/) ------------------------------------------------------
# The base model vLLM serves: a local folder or a Hugging Face hub id of a causal LM.
# Production default: Mixtral 8x7B Instruct. In debug (the demo, the tests) the default is
# empty: the embedded SmolLM2-135M-Instruct, converted once by `manage.py model_prepare`.
MODEL_PATH = os.environ.get("MODEL_PATH", "" if DEBUG else "mistralai/Mixtral-8x7B-Instruct-v0.1")
MODEL_DEMO_DIR = Path(os.environ.get("MODEL_DEMO_DIR", VAR_DIR / "models" / "smollm2-135m-instruct"))
# The name vLLM serves the base model under (the `model` of chat requests without an adapter).
MODEL_SERVED_NAME = os.environ.get("MODEL_SERVED_NAME", "base")
# A chat template file to use instead of the one the project picks for the model family.
MODEL_CHAT_TEMPLATE = os.environ.get("MODEL_CHAT_TEMPLATE", "")
# Where vLLM listens. Its adapter endpoints are unauthenticated: keep it on a private address.
VLLM_HOST = os.environ.get("VLLM_HOST", "127.0.0.1")
VLLM_PORT = int(os.environ.get("VLLM_PORT", "8001"))
VLLM_BASE_URL = os.environ.get("VLLM_BASE_URL", f"http://{VLLM_HOST}:{VLLM_PORT}")
VLLM_MAX_LORAS = int(os.environ.get("VLLM_MAX_LORAS", "4"))
VLLM_MAX_CPU_LORAS = int(os.environ.get("VLLM_MAX_CPU_LORAS", "16"))
VLLM_MAX_LORA_RANK = int(os.environ.get("VLLM_MAX_LORA_RANK", "16"))
VLLM_MAX_MODEL_LEN = int(os.environ.get("VLLM_MAX_MODEL_LEN", "4096"))
VLLM_EXTRA_ARGS = os.environ.get("VLLM_EXTRA_ARGS", "")
# vLLM's --dtype; empty picks: the model's own on GPU, float32 on CPUs without native bf16.
VLLM_DTYPE = os.environ.get("VLLM_DTYPE", "")
# Seconds to wait for the model server: to connect, and for a whole reply (or between streamed tokens).
MODEL_CONNECT_TIMEOUT_SECONDS = float(os.environ.get("MODEL_CONNECT_TIMEOUT_SECONDS", "5"))
MODEL_REPLY_TIMEOUT_SECONDS = float(os.environ.get("MODEL_REPLY_TIMEOUT_SECONDS", "120"))
# Longest tutor reply, in tokens; sampling temperature.
# A retired adapter version is unloaded from vLLM this long after nobody is routed to it any more.
ADAPTER_RETIRE_GRACE_SECONDS = float(os.environ.get("ADAPTER_RETIRE_GRACE_SECONDS", str(MODEL_REPLY_TIMEOUT_SECONDS)))
MODEL_MAX_REPLY_TOKENS = int(os.environ.get("MODEL_MAX_REPLY_TOKENS", "512"))
MODEL_TEMPERATURE = float(os.environ.get("MODEL_TEMPERATURE", "0.3"))

# --- Chat limits ---------------------------------------------------------------------
CHAT_MAX_MESSAGE_CHARS = int(os.environ.get("CHAT_MAX_MESSAGE_CHARS", "4000"))
CHAT_RATE_LIMIT = os.environ.get("CHAT_RATE_LIMIT", "20/min")
# Turns of history (student + tutor messages) sent with each request.
CHAT_HISTORY_MESSAGES = int(os.environ.get("CHAT_HISTORY_MESSAGES", "20"))

# --- Safety screening (tutor/guardrails.py, docs/safety.md) ------------------------------
# Extra rules, JSON {"category": ["regex", ...]}, matched against the normalised text.
GUARDRAILS_EXTRA_INPUT_RULES = json.loads(os.environ.get("GUARDRAILS_EXTRA_INPUT_RULES", "{}"))
GUARDRAILS_EXTRA_OUTPUT_RULES = json.loads(os.environ.get("GUARDRAILS_EXTRA_OUTPUT_RULES", "{}"))
# The built-in rule files in force, and a folder of the deployment's own (*.yaml, same schema).
SAFETY_LANGUAGES = os.environ.get("SAFETY_LANGUAGES", "en,es,fr,de")
SAFETY_RULES_DIR = os.environ.get("SAFETY_RULES_DIR", "")
# The region whose help resources safe replies give (ISO 3166 code: GB, US, ES, FR, DE, ...;
# empty: international), and the language of safe replies when neither the course's reply
# language nor the message says.
SAFETY_REGION = os.environ.get("SAFETY_REGION", "")
SAFETY_DEFAULT_LANGUAGE = os.environ.get("SAFETY_DEFAULT_LANGUAGE", LANGUAGE_CODE.split("-")[0])
# Categories whose safe reply carries the help resources, and those flagged as urgent.
SAFETY_RESOURCE_CATEGORIES = os.environ.get("SAFETY_RESOURCE_CATEGORIES", "self_harm,abuse")
SAFETY_URGENT_CATEGORIES = os.environ.get("SAFETY_URGENT_CATEGORIES", "self_harm,abuse")
# Texts replacing the built-in ones: JSON {"category": {"lang": "text"}} and {"REGION": {"lang": "text"}}.
SAFETY_REPLIES = json.loads(os.environ.get("SAFETY_REPLIES", "{}"))
SAFETY_RESOURCES = json.loads(os.environ.get("SAFETY_RESOURCES", "{}"))
# The moderation model (the deployment's own model server) as a further layer: off by default,
# since the demo's 135M model cannot classify; its own timeout (seconds) keeps chat responsive.
SAFETY_CLASSIFIER_ENABLED = env_bool("SAFETY_CLASSIFIER_ENABLED", False)
MODERATION_TIMEOUT_SECONDS = float(os.environ.get("MODERATION_TIMEOUT_SECONDS", "3"))

# --- Safety alerts (tutor/flags.py, tutor/alerts.py; docs/alerts.md) -------------------------------
# Besides each course's own alert addresses (its teachers set them in the tutor settings), these
# receive every urgent flag of every course (comma-separated; a safeguarding team's address).
SAFETY_ALERT_EMAILS = env_list("SAFETY_ALERT_EMAILS")
# An urgent flag nobody acknowledged this many minutes after it was raised is emailed to the
# course's escalation addresses (set by its administrators) and to these. 0: never escalate.
SAFETY_ADMIN_EMAILS = env_list("SAFETY_ADMIN_EMAILS")
SAFETY_ESCALATE_AFTER_MINUTES = float(os.environ.get("SAFETY_ESCALATE_AFTER_MINUTES", "30"))
# Each urgent flag schedules its own escalation task; a periodic sweep (this often, in seconds)
# escalates any whose task was lost (a broker restart, a worker that was down).
SAFETY_ESCALATION_SWEEP_SECONDS = float(os.environ.get("SAFETY_ESCALATION_SWEEP_SECONDS", "60"))

# Email (Django's email framework). In debug (the demo) messages are written to files in
# var/outbox, which the development LMS lists at /devlms/outbox/; otherwise SMTP.
EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.filebased.EmailBackend" if DEBUG else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_FILE_PATH = os.environ.get("EMAIL_FILE_PATH", str(VAR_DIR / "outbox"))
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = float(os.environ.get("EMAIL_TIMEOUT", "10"))
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", f"{TOOL_TITLE} <tutor@localhost>")

# --- Privacy, review and training data ----------------------------------------------------
# Conversations (and everything about them) are deleted this many days after their last
# message by a daily Celery task; 0 keeps them until erased.
RETENTION_DAYS = int(os.environ.get("RETENTION_DAYS", "365"))
# Teachers' review screens show the names the LMS sent for their students.
REVIEW_SHOW_NAMES = env_bool("REVIEW_SHOW_NAMES", True)
# Where dataset exports are written (one folder per course).
TRAINING_DATA_DIR = Path(os.environ.get("TRAINING_DATA_DIR", VAR_DIR / "datasets"))
# Longest training example, in tokens of the base model's tokenizer. The export's validation
# shortens a longer one (earlier turns first, then the middle of the longest student message)
# and drops it only when the trained reply alone does not fit; the report counts both.
TRAINING_MAX_SEQ_TOKENS = int(os.environ.get("TRAINING_MAX_SEQ_TOKENS", "1024"))
# Held-out share of conversations in an export, and the similarity above which two
# examples count as near duplicates (Jaccard on word 5-grams, MinHash LSH).
TRAINING_EVAL_FRACTION = float(os.environ.get("TRAINING_EVAL_FRACTION", "0.1"))
TRAINING_NEAR_DUPLICATE_THRESHOLD = float(os.environ.get("TRAINING_NEAR_DUPLICATE_THRESHOLD", "0.85"))
# Training throughput assumed for time estimates until a job has measured it on this machine
# (tokens/s; each job stores what it measured per base model and device, and later estimates
# use that; the default is what the demo model trains at on this project's 2-core machine kind
# with the model server beside it, docs/benchmarks.md).
TRAINING_ESTIMATE_TOKENS_PER_SECOND = float(os.environ.get("TRAINING_ESTIMATE_TOKENS_PER_SECOND", "90"))
# The recipe's defaults (training/recipe.py's TrainConfig; docs/retraining.md). A step is one
# padding-free pack of at most TRAINING_TOKENS_PER_STEP tokens (bounds memory); a job makes
# TRAINING_EPOCHS passes over the training tokens, within [TRAINING_MIN_STEPS,
# TRAINING_STEP_BUDGET] steps, and stops early after TRAINING_EARLY_STOPPING_PATIENCE
# evaluations (TRAINING_EVALS_PER_EPOCH an epoch) without a better held-out loss.
TRAINING_TOKENS_PER_STEP = int(os.environ.get("TRAINING_TOKENS_PER_STEP", "512"))
TRAINING_EPOCHS = float(os.environ.get("TRAINING_EPOCHS", "1.5"))
TRAINING_MIN_STEPS = int(os.environ.get("TRAINING_MIN_STEPS", "20"))
TRAINING_STEP_BUDGET = int(os.environ.get("TRAINING_STEP_BUDGET", "2000"))
TRAINING_EVALS_PER_EPOCH = int(os.environ.get("TRAINING_EVALS_PER_EPOCH", "2"))
TRAINING_EARLY_STOPPING_PATIENCE = int(os.environ.get("TRAINING_EARLY_STOPPING_PATIENCE", "2"))
TRAINING_LORA_RANK = int(os.environ.get("TRAINING_LORA_RANK", "16"))
TRAINING_LEARNING_RATE = float(os.environ.get("TRAINING_LEARNING_RATE", "2e-4"))
# Memory: a job whose estimated peak exceeds what the machine has free (or this limit, in MB)
# is refused before it starts; with a limit set, a training process that grows past it is
# stopped and reported as out of memory (0: no limit beyond the machine's own).
TRAINING_MEMORY_LIMIT_MB = int(os.environ.get("TRAINING_MEMORY_LIMIT_MB", "0"))
# The training process's memory allocator: `auto` preloads jemalloc where installed (Debian:
# libjemalloc2), else tunes glibc to return freed memory; `jemalloc`, `glibc`, or `system`.
TRAINING_MALLOC = os.environ.get("TRAINING_MALLOC", "auto")

# Retraining (training/): where jobs keep their checkpoints and adapters; the evaluation gate
# (a candidate is promoted automatically when its held-out loss is lower than the adapter in
# service's, or the base model's for a first adapter, by this relative margin); the schedule.
TRAINING_JOBS_DIR = Path(os.environ.get("TRAINING_JOBS_DIR", VAR_DIR / "training"))
TRAINING_GATE_MARGIN = float(os.environ.get("TRAINING_GATE_MARGIN", "0.02"))
# ... and when, besides, the candidate answered up to TRAINING_GATE_SAMPLES held-out questions
# through vLLM with no failed or empty reply, and its replies' chrF against the teachers' is at
# least the current tutor's plus this many points (0-100 scale).
TRAINING_GATE_SAMPLES = int(os.environ.get("TRAINING_GATE_SAMPLES", "20"))
TRAINING_GATE_CHRF_MARGIN = float(os.environ.get("TRAINING_GATE_CHRF_MARGIN", "0"))
TRAINING_AUTO_PROMOTE = env_bool("TRAINING_AUTO_PROMOTE", True)
TRAINING_RETRAIN_MIN_NEW_EXAMPLES = int(os.environ.get("TRAINING_RETRAIN_MIN_NEW_EXAMPLES", "50"))
# A worker holds its job for this long past its last heartbeat (every third of it); after that a
# redelivered task may take the job over and resume it.
TRAINING_LEASE_SECONDS = int(os.environ.get("TRAINING_LEASE_SECONDS", "120"))
TRAINING_SOFT_TIME_LIMIT_SECONDS = int(os.environ.get("TRAINING_SOFT_TIME_LIMIT_SECONDS", str(6 * 3600)))
TRAINING_TIME_LIMIT_SECONDS = int(os.environ.get("TRAINING_TIME_LIMIT_SECONDS", str(6 * 3600 + 600)))

# --- Background work (Celery) -----------------------------------------------------------------
# Broker: CELERY_BROKER_URL, else Redis (REDIS_URL), else Kombu's filesystem transport in
# var/celery (the demo: a real worker, no external service). RabbitMQ: amqp://user:pass@host//.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL or "filesystem://")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", REDIS_URL or f"file://{VAR_DIR / 'celery' / 'results'}")
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        "data_folder_in": str(VAR_DIR / "celery" / "queue"),
        "data_folder_out": str(VAR_DIR / "celery" / "queue"),
        "processed_folder": str(VAR_DIR / "celery" / "processed"),
        "control_folder": str(VAR_DIR / "celery" / "control"),  # Kombu's default is ./control
        "store_processed": False,
    }
    if CELERY_BROKER_URL.startswith("filesystem")
    else {}
)
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"training.tasks.*": {"queue": "gpu"}}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE = {
    "conversations-expire": {"task": "tutor.tasks.conversations_expire", "schedule": 24 * 3600},
    "retrain-due": {"task": "training.tasks.retrain_due", "schedule": 24 * 3600},
    "flags-escalate-due": {"task": "tutor.tasks.flags_escalate_due", "schedule": SAFETY_ESCALATION_SWEEP_SECONDS},
}
# One training job per GPU worker at a time; no prefetching a second one.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tutor.auth.LaunchTokenAuthentication",
        "tutor.auth.LaunchSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["tutor.auth.IsLaunched"],
    "EXCEPTION_HANDLER": "tutor.errors.api_exception_handler",
    # JSON only: the API's one client sends JSON, and form encodings blur its types (a missing
    # boolean reads as false).
    "DEFAULT_PARSER_CLASSES": ["tutor.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "tutor.schema.TutorAutoSchema",
    "DEFAULT_THROTTLE_RATES": {"chat": CHAT_RATE_LIMIT},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "AI Tutor API",
    "DESCRIPTION": "Chat with a course's tutor. Authenticate with the launch token: `Authorization: Bearer <token>`.",
    "VERSION": "1",
    # Request bodies get their own components, so input constraints (minLength…) are stated.
    "COMPONENT_SPLIT_REQUEST": True,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # Presidio logs every recognizer it loads, per message for the roster's: keep its warnings only.
    "loggers": {"django.request": {"level": "ERROR"}, "presidio-analyzer": {"level": "WARNING"}},
}
