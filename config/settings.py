"""Django settings, read from the environment with django-environ.

Every setting below names its environment variable and its default; the same
table, with what each one is for, is in docs/configuration.md. Defaults are the
embedded demo (SQLite, database cache, no external service); production sets
PUBLIC_BASE_URL to an https URL, SECRET_KEY, PSEUDONYM_SECRET and DATABASE_URL.
A value that does not parse (a word where a number goes, an unknown database
scheme) stops the start with ImproperlyConfigured naming the variable.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured


class Env(environ.Env):
    """django-environ, stricter where a typo should stop the start rather than change a setting.

    Booleans take 1/0, true/false, yes/no or on/off (empty: the default), where the library reads
    any other word as false; floats are Python's (the library's drops letters, so it refuses 2e-4
    and reads 1.5x as 1.5); list items are trimmed; a value that does not parse names its variable.
    """

    BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
    KINDS = {bool: "a boolean (1/0, true/false)", int: "an integer", float: "a number"}

    def get_value(self, var, cast=None, default=environ.Env.NOTSET, parse_default=False):
        if cast is bool and self.ENVIRON.get(var) == "":
            return default
        try:
            return super().get_value(var, cast=cast, default=default, parse_default=parse_default)
        except ValueError as exc:  # json's JSONDecodeError included
            kind = self.KINDS.get(cast, "JSON")
            raise ImproperlyConfigured(f"{var} must be {kind}, not {self.ENVIRON[var]!r}") from exc

    @classmethod
    def parse_value(cls, value, cast):
        if cast is bool:
            if value.lower() not in cls.BOOLEANS:
                raise ValueError(value)
            return cls.BOOLEANS[value.lower()]
        if cast is float:
            return float(value)
        if cast is list:
            return [item.strip() for item in value.split(",") if item.strip()]
        return super().parse_value(value, cast)


env = Env()

# --- Core: paths, debug, secrets --------------------------------------------------------------
BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = env("TUTOR_VAR_DIR", cast=Path, default=BASE_DIR / "var")
DEBUG = env.bool("DJANGO_DEBUG", False)


def _secret(name: str) -> str:
    """A secret from the environment; in debug mode one is made once and kept in var/.

    Read verbatim with os.environ: django-environ takes a value starting with `$` for the name
    of another variable, and a generated key may start with one.
    """
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


SECRET_KEY = _secret("SECRET_KEY")
# Keyed hash for pseudonymous student ids; separate from SECRET_KEY so rotating
# the session key never re-identifies or orphans anyone's data.
PSEUDONYM_SECRET = _secret("PSEUDONYM_SECRET")

# --- Public URL and hosts: every tool-side LTI URL is built from PUBLIC_BASE_URL ---------------
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
_public = urlsplit(PUBLIC_BASE_URL)
if _public.scheme not in {"http", "https"} or not _public.hostname:
    raise ImproperlyConfigured(f"PUBLIC_BASE_URL must be an http(s) URL, not {PUBLIC_BASE_URL!r}")
PUBLIC_IS_HTTPS = _public.scheme == "https"

ALLOWED_HOSTS = [_public.hostname, *env.list("ALLOWED_HOSTS", default=[])]
if DEBUG:
    ALLOWED_HOSTS += ["127.0.0.1", "localhost", "[::1]"]

# --- Applications, middleware, templates (the development LMS never in production) ------------
DEVLMS_ENABLED = env.bool("DEVLMS_ENABLED", DEBUG)

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

# --- Database ---------------------------------------------------------------------------------
_database_url = env.str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'tutor.sqlite3'}")
# Checked here, since django-environ turns an unknown scheme into an engine Django fails to import
# later; the message leaves the URL out, which may hold a password.
if _database_url.partition("://")[0] not in Env.DB_SCHEMES:
    raise ImproperlyConfigured(
        "DATABASE_URL must be a database URL: postgres://user:password@host:5432/name, or sqlite:///path"
    )
DATABASES = {"default": {**env.db_url_config(_database_url), "CONN_MAX_AGE": env.int("DATABASE_CONN_MAX_AGE", 0)}}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # The embedded default must take a class chatting at once. WAL lets readers go on while one
    # connection writes; IMMEDIATE takes the write lock when a transaction begins, so two writers
    # queue on the busy timeout instead of one failing at once with "database is locked" (which
    # a deferred transaction that reads and then writes cannot wait out).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": env.float("DATABASE_SQLITE_TIMEOUT_SECONDS", 30.0),
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache ------------------------------------------------------------------------------------
# The cache holds OIDC state/nonces, used nonces and platforms' key sets, so it
# must be shared by every web process: Redis in production, the database otherwise.
REDIS_URL = env.str("REDIS_URL", "")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "tutor_cache"}}

# --- Language, time, static files, logging ----------------------------------------------------
LANGUAGE_CODE = "en"
TIME_ZONE = env.str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env("STATIC_ROOT", cast=Path, default=BASE_DIR / "staticfiles")
# In debug (the demo) static files are served straight from the apps; production runs collectstatic.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", "INFO")},
    # Presidio logs every recognizer it loads, per message for the roster's: keep its warnings only.
    "loggers": {"django.request": {"level": "ERROR"}, "presidio-analyzer": {"level": "WARNING"}},
}

# --- Security and the LMS iframe --------------------------------------------------------------
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
if env.bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
if PUBLIC_IS_HTTPS:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", 60 * 60 * 24 * 365)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", True)
# For LMSs whose pages live on another host than their issuer (Canvas: the school's own domain).
LTI_EXTRA_FRAME_ANCESTORS = env.list("LTI_EXTRA_FRAME_ANCESTORS", default=[])

# --- LTI --------------------------------------------------------------------------------------
LTI_TRUSTED_AUDIENCES = env.list("LTI_TRUSTED_AUDIENCES", default=[])
LTI_KEYSET_CACHE_SECONDS = env.int("LTI_KEYSET_CACHE_SECONDS", 3600)
# A token naming an unknown kid makes us fetch the key set again; a kid still missing after that
# fetch is refused without fetching for this long (seconds; per kid, not per key set).
LTI_KEYSET_REFETCH_MIN_SECONDS = env.int("LTI_KEYSET_REFETCH_MIN_SECONDS", 30)
LTI_HTTP_TIMEOUT_SECONDS = env.float("LTI_HTTP_TIMEOUT_SECONDS", 10.0)
LTI_KEY_RETIRE_AFTER_DAYS = env.int("LTI_KEY_RETIRE_AFTER_DAYS", 7)
LAUNCH_TOKEN_MAX_AGE = env.int("LAUNCH_TOKEN_MAX_AGE", 2 * 60 * 60)
LTI_DYNAMIC_REGISTRATION_ENABLED = env.bool("LTI_DYNAMIC_REGISTRATION_ENABLED", True)
TOOL_TITLE = env.str("TOOL_TITLE", "AI Tutor")

# --- Model serving (serving/) -----------------------------------------------------------------
# In debug (the demo, the tests) the base model defaults to the embedded SmolLM2-135M-Instruct,
# converted once by `manage.py model_prepare`.
MODEL_PATH = env.str("MODEL_PATH", "" if DEBUG else "mistralai/Mixtral-8x7B-Instruct-v0.1")
MODEL_DEMO_DIR = env("MODEL_DEMO_DIR", cast=Path, default=VAR_DIR / "models" / "smollm2-135m-instruct")
# The chat tells students the demo model is tiny and often wrong (on by default when it is served).
DEMO_NOTICE = env.bool("DEMO_NOTICE", not MODEL_PATH)
MODEL_SERVED_NAME = env.str("MODEL_SERVED_NAME", "base")
MODEL_CHAT_TEMPLATE = env.str("MODEL_CHAT_TEMPLATE", "")
# Where vLLM listens. Its adapter endpoints are unauthenticated: keep it on a private address.
VLLM_HOST = env.str("VLLM_HOST", "127.0.0.1")
VLLM_PORT = env.int("VLLM_PORT", 8001)
VLLM_BASE_URL = env.str("VLLM_BASE_URL", f"http://{VLLM_HOST}:{VLLM_PORT}")
# Every replica a promotion warms and a retirement unloads on (empty: the one at VLLM_BASE_URL,
# read when used, so a VLLM_BASE_URL changed at run time is followed).
VLLM_REPLICA_URLS = env.list("VLLM_REPLICA_URLS", default=[])
# Every adapter version is written here once, under its name; replicas resolve adapters from it
# (vLLM's filesystem resolver), so it must be the same storage for all of them.
ADAPTER_STORE_DIR = env("ADAPTER_STORE_DIR", cast=Path, default=VAR_DIR / "adapters")
VLLM_MAX_LORAS = env.int("VLLM_MAX_LORAS", 4)
VLLM_MAX_CPU_LORAS = env.int("VLLM_MAX_CPU_LORAS", 16)
VLLM_MAX_LORA_RANK = env.int("VLLM_MAX_LORA_RANK", 16)
VLLM_MAX_MODEL_LEN = env.int("VLLM_MAX_MODEL_LEN", 4096)
VLLM_EXTRA_ARGS = env.str("VLLM_EXTRA_ARGS", "")
VLLM_DTYPE = env.str("VLLM_DTYPE", "")
MODEL_CONNECT_TIMEOUT_SECONDS = env.float("MODEL_CONNECT_TIMEOUT_SECONDS", 5.0)
MODEL_REPLY_TIMEOUT_SECONDS = env.float("MODEL_REPLY_TIMEOUT_SECONDS", 120.0)
# By default no reply begun on a retired adapter can still be running when it is unloaded.
ADAPTER_RETIRE_GRACE_SECONDS = env.float("ADAPTER_RETIRE_GRACE_SECONDS", MODEL_REPLY_TIMEOUT_SECONDS)
MODEL_MAX_REPLY_TOKENS = env.int("MODEL_MAX_REPLY_TOKENS", 512)
MODEL_TEMPERATURE = env.float("MODEL_TEMPERATURE", 0.3)

# --- Chat limits ------------------------------------------------------------------------------
CHAT_MAX_MESSAGE_CHARS = env.int("CHAT_MAX_MESSAGE_CHARS", 4000)
CHAT_RATE_LIMIT = env.str("CHAT_RATE_LIMIT", "20/min")
CHAT_HISTORY_MESSAGES = env.int("CHAT_HISTORY_MESSAGES", 20)

# --- Safety screening (tutor/guardrails.py, docs/safety.md) -----------------------------------
GUARDRAILS_EXTRA_INPUT_RULES = env.json("GUARDRAILS_EXTRA_INPUT_RULES", {})
GUARDRAILS_EXTRA_OUTPUT_RULES = env.json("GUARDRAILS_EXTRA_OUTPUT_RULES", {})
SAFETY_LANGUAGES = env.str("SAFETY_LANGUAGES", "en,es,fr,de")
SAFETY_RULES_DIR = env.str("SAFETY_RULES_DIR", "")
SAFETY_REGION = env.str("SAFETY_REGION", "")  # empty: the international help resources
SAFETY_DEFAULT_LANGUAGE = env.str("SAFETY_DEFAULT_LANGUAGE", LANGUAGE_CODE.split("-")[0])
SAFETY_RESOURCE_CATEGORIES = env.str("SAFETY_RESOURCE_CATEGORIES", "self_harm,abuse")
SAFETY_URGENT_CATEGORIES = env.str("SAFETY_URGENT_CATEGORIES", "self_harm,abuse")
SAFETY_REPLIES = env.json("SAFETY_REPLIES", {})
SAFETY_RESOURCES = env.json("SAFETY_RESOURCES", {})
# The moderation model (the deployment's own model server) as a further layer: off by default,
# since the demo's 135M model cannot classify; its own timeout (seconds) keeps chat responsive.
SAFETY_CLASSIFIER_ENABLED = env.bool("SAFETY_CLASSIFIER_ENABLED", False)
MODERATION_TIMEOUT_SECONDS = env.float("MODERATION_TIMEOUT_SECONDS", 3.0)

# --- Safety alerts (tutor/flags.py, tutor/alerts.py; docs/alerts.md) --------------------------
# Addresses for every course, besides each course's own (set by its teachers and administrators).
SAFETY_ALERT_EMAILS = env.list("SAFETY_ALERT_EMAILS", default=[])
SAFETY_ADMIN_EMAILS = env.list("SAFETY_ADMIN_EMAILS", default=[])
SAFETY_ESCALATE_AFTER_MINUTES = env.float("SAFETY_ESCALATE_AFTER_MINUTES", 30.0)  # 0: never escalate
# Each urgent flag schedules its own escalation task; the periodic sweep catches any whose task
# was lost (a broker restart, a worker that was down).
SAFETY_ESCALATION_SWEEP_SECONDS = env.float("SAFETY_ESCALATION_SWEEP_SECONDS", 60.0)

# --- Email (Django's email framework) ---------------------------------------------------------
# In debug (the demo) messages are written to files in var/outbox, which the development LMS
# lists at /devlms/outbox/; otherwise SMTP.
EMAIL_BACKEND = env.str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.filebased.EmailBackend" if DEBUG else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_FILE_PATH = env.str("EMAIL_FILE_PATH", str(VAR_DIR / "outbox"))
EMAIL_HOST = env.str("EMAIL_HOST", "localhost")
EMAIL_PORT = env.int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")  # verbatim, like the secrets above
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = env.float("EMAIL_TIMEOUT", 10.0)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", f"{TOOL_TITLE} <tutor@localhost>")

# --- Privacy and review -----------------------------------------------------------------------
RETENTION_DAYS = env.int("RETENTION_DAYS", 365)  # 0 keeps conversations until erased
REVIEW_SHOW_NAMES = env.bool("REVIEW_SHOW_NAMES", True)

# --- Training data (training/datasets.py) -----------------------------------------------------
TRAINING_DATA_DIR = env("TRAINING_DATA_DIR", cast=Path, default=VAR_DIR / "datasets")
TRAINING_MAX_SEQ_TOKENS = env.int("TRAINING_MAX_SEQ_TOKENS", 1024)
TRAINING_EVAL_FRACTION = env.float("TRAINING_EVAL_FRACTION", 0.1)
TRAINING_NEAR_DUPLICATE_THRESHOLD = env.float("TRAINING_NEAR_DUPLICATE_THRESHOLD", 0.85)

# --- Training recipe and resources (training/recipe.py's TrainConfig; docs/retraining.md) ------
# Until a job has measured it here: what the demo model trains at on this project's 2-core
# machine kind with the model server beside it (tokens/s, docs/benchmarks.md).
TRAINING_ESTIMATE_TOKENS_PER_SECOND = env.float("TRAINING_ESTIMATE_TOKENS_PER_SECOND", 90.0)
TRAINING_TOKENS_PER_STEP = env.int("TRAINING_TOKENS_PER_STEP", 512)
TRAINING_EPOCHS = env.float("TRAINING_EPOCHS", 1.5)
TRAINING_MIN_STEPS = env.int("TRAINING_MIN_STEPS", 20)
TRAINING_STEP_BUDGET = env.int("TRAINING_STEP_BUDGET", 2000)
TRAINING_EVALS_PER_EPOCH = env.int("TRAINING_EVALS_PER_EPOCH", 2)
TRAINING_EARLY_STOPPING_PATIENCE = env.int("TRAINING_EARLY_STOPPING_PATIENCE", 2)
TRAINING_LORA_RANK = env.int("TRAINING_LORA_RANK", 16)
TRAINING_LEARNING_RATE = env.float("TRAINING_LEARNING_RATE", 2e-4)
TRAINING_MEMORY_LIMIT_MB = env.int("TRAINING_MEMORY_LIMIT_MB", 0)  # 0: only what the machine has free
TRAINING_MALLOC = env.str("TRAINING_MALLOC", "auto")

# --- Retraining: jobs, the evaluation gate, the schedule (training/) --------------------------
TRAINING_JOBS_DIR = env("TRAINING_JOBS_DIR", cast=Path, default=VAR_DIR / "training")
TRAINING_GATE_MARGIN = env.float("TRAINING_GATE_MARGIN", 0.02)
TRAINING_GATE_SAMPLES = env.int("TRAINING_GATE_SAMPLES", 20)
TRAINING_GATE_CHRF_MARGIN = env.float("TRAINING_GATE_CHRF_MARGIN", 0.0)
TRAINING_AUTO_PROMOTE = env.bool("TRAINING_AUTO_PROMOTE", True)
TRAINING_RETRAIN_MIN_NEW_EXAMPLES = env.int("TRAINING_RETRAIN_MIN_NEW_EXAMPLES", 50)
# A worker heartbeats every third of the lease, so one missed beat never loses the job.
TRAINING_LEASE_SECONDS = env.int("TRAINING_LEASE_SECONDS", 120)
TRAINING_SOFT_TIME_LIMIT_SECONDS = env.int("TRAINING_SOFT_TIME_LIMIT_SECONDS", 6 * 3600)
TRAINING_TIME_LIMIT_SECONDS = env.int("TRAINING_TIME_LIMIT_SECONDS", 6 * 3600 + 600)

# --- Background work (Celery) -----------------------------------------------------------------
# Without Redis, Kombu's filesystem transport in var/celery: the demo runs a real worker with no
# external service.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", REDIS_URL or "filesystem://")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", REDIS_URL or f"file://{VAR_DIR / 'celery' / 'results'}")
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

# --- Monitoring: /health/ and /metrics (config/health.py, config/metrics.py; docs/operations.md) -
# Who may read /metrics and the details of /health/: a client address in these networks, or a
# request with `Authorization: Bearer MONITORING_TOKEN` (empty: no token is accepted).
MONITORING_ALLOWED_NETWORKS = env.list("MONITORING_ALLOWED_NETWORKS", default=["127.0.0.1/32", "::1/128"])
try:
    for _network in MONITORING_ALLOWED_NETWORKS:
        ipaddress.ip_network(_network, strict=False)
except ValueError as exc:
    raise ImproperlyConfigured(f"MONITORING_ALLOWED_NETWORKS must list networks like 10.0.0.0/8 ({exc})") from exc
MONITORING_TOKEN = os.environ.get("MONITORING_TOKEN", "")  # verbatim, like the secrets above
# Each check of /health/ (the broker, the workers' ping, each replica) waits at most this long.
HEALTH_CHECK_TIMEOUT_SECONDS = env.float("HEALTH_CHECK_TIMEOUT_SECONDS", 2.0)
# A Celery worker's own metrics (adapter loads, switches and unloads it made: a training job's
# promotion runs there), served by the worker's main process for Prometheus; 0: not served.
# Unauthenticated: keep the address private (config.metrics.worker_metrics_serve).
WORKER_METRICS_PORT = env.int("WORKER_METRICS_PORT", 0)
WORKER_METRICS_ADDRESS = env.str("WORKER_METRICS_ADDRESS", "127.0.0.1")
# Monitoring reaches the app on its own port, over plain http on a private network: no redirect.
SECURE_REDIRECT_EXEMPT = [r"^health/$", r"^metrics$"]

# --- API (Django REST framework, drf-spectacular) ---------------------------------------------
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
