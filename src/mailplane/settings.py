"""Django settings. Everything that differs between deployments comes from `config`."""

from __future__ import annotations

import os
from typing import Any

import dj_database_url
import django_stubs_ext

from mailplane import config

# Lets Django's generic classes (ModelAdmin[Model], QuerySet[Model]) be subscripted at run time.
django_stubs_ext.monkeypatch()

DATA_DIR = config.data_dir()
SECRET_KEYS = config.secret_keys()
SECRET_KEY = SECRET_KEYS[0]
DEBUG = config.env_bool("MAILPLANE_DEBUG")
ALLOWED_HOSTS = os.environ.get("MAILPLANE_ALLOWED_HOSTS", "*").split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_results",
    "mailplane.tenancy",
    "mailplane.cells",
    "mailplane.projects",
    "mailplane.relays",
    "mailplane.domains",
    "mailplane.mailboxes",
    "mailplane.jobs",
    "mailplane.queue",
    "mailplane.dnsproviders",
    "mailplane.servers",
    "mailplane.webhooks",
    "mailplane.pools",
    "mailplane.reputation",
    "mailplane.analytics",
    "mailplane.tracking",
    "mailplane.inbound",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before anything else does work for the request: a refused one costs one counter call.
    "mailplane.api.ratelimits.RateLimitMiddleware",
    # Static files (the docs' Swagger UI and Redoc from drf-spectacular-sidecar, the admin's)
    # served by the app itself in both modes: gunicorn serves none, and DEBUG is off.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Routing to an account's cell is set at authentication and undone after the response.
    "mailplane.cells.middleware.CellRoutingMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "mailplane.urls"
WSGI_APPLICATION = "mailplane.wsgi.application"
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
            ]
        },
    }
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{DATA_DIR / 'mailplane.sqlite3'}"),
        conn_max_age=int(os.environ.get("MAILPLANE_DB_CONN_MAX_AGE", "60")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        # WAL lets readers run beside the one writer; IMMEDIATE takes the write lock at BEGIN
        # so concurrent writers queue on busy_timeout instead of failing mid-transaction.
        # synchronous=FULL fsyncs the WAL at every commit: a 250/2xx follows a commit, and
        # NORMAL could lose the last commits on power loss. Group commit (smtp/ingest.py)
        # spreads that fsync over a whole batch.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Each account's data to its cell's database; cell aliases are added as they are first
# needed (cells/selectors.py cell_name_alias), from the registry in `default`.
DATABASE_ROUTERS = ["mailplane.cells.routing.CellRouter"]

AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
# WhiteNoise finds the files in the installed apps themselves: no collectstatic step, in
# embedded or production mode. (A deployment that runs collectstatic is served from it too.)
WHITENOISE_USE_FINDERS = True
STATIC_ROOT.mkdir(exist_ok=True, mode=0o700)  # WhiteNoise warns at every start when it is missing
WHITENOISE_AUTOREFRESH = False

# Uploads (bulk CSV) are bounded here and again in the view with a clear error.
DATA_UPLOAD_MAX_MEMORY_SIZE = 6 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 6 * 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["mailplane.api.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "mailplane.api.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "mailplane.api.schema.AutoSchema",
    "EXCEPTION_HANDLER": "mailplane.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "mailplane.api.parsers.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Mailplane API",
    "DESCRIPTION": (
        "Management and sending API, compatible with the Mission Inbox API.\n\n"
        "- Authenticate with `Authorization: Api-Key <key>`.\n"
        "- Every list takes `?limit=&offset=` and answers "
        '`{"count", "next", "previous", "results"}`.\n'
        '- Every error is `{"error": {"code", "message", "details"}}`; `details` maps '
        "each offending field or parameter to its messages. 400: invalid input; 401: no "
        "or a wrong key; 403: a plan limit; 404: not in this account; 409: a duplicate; "
        "413: body too large; 429: too many wrong keys (`Retry-After`).\n"
        "- Asynchronous work answers 202 `{task_id}`: poll `GET /api/tasks/{task_id}/` "
        "until `status` is `success` or `failure`."
    ),
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Tags (and operation ids) from the resource name after /api/.
    "SCHEMA_PATH_PREFIX": r"/api/",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "mailplane.api.schema.integer_query_parameters_allow_empty",
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Separate request and response components: read-only fields are required in
    # responses, absent from requests (what client generators need).
    "COMPONENT_SPLIT_REQUEST": True,
    # `<id:…>` in routes (api/fields.py): ids from 1 to 2^63-1.
    "PATH_CONVERTER_OVERRIDES": {
        "id": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
    },
    # One named enum per set of choices (several are called `status` or `provider`).
    "ENUM_NAME_OVERRIDES": {
        "StreamKindEnum": "mailplane.servers.models.StreamKind",
        "ServerKeyKindEnum": "mailplane.servers.models.ServerKeyKind",
        "TaskStatusEnum": "mailplane.jobs.models.JobStatus",
        "MailboxStatusEnum": "mailplane.mailboxes.models.MailboxStatus",
        "RelayProviderEnum": "mailplane.relays.models.Provider",
        "RelayStatusEnum": "mailplane.relays.models.RelayStatus",
        "RecipientStatusEnum": "mailplane.queue.models.RecipientStatus",
        "RecordStatusEnum": "mailplane.domains.models.RecordStatus",
        "DnsProviderKindEnum": "mailplane.dnsproviders.models.DnsProviderKind",
        "DnsProviderStatusEnum": "mailplane.dnsproviders.models.ConnectionStatus",
        "WebhookEventTypeEnum": "mailplane.webhooks.models.WebhookEventType",
        "WebhookDeliveryStateEnum": "mailplane.webhooks.models.DeliveryState",
        "WaitingReasonEnum": "mailplane.queue.waiting.REASONS",
    },
}

# Celery. Embedded mode uses kombu's file-system transport: no broker server to run.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", config.default_broker_url())
_QUEUE_DIR = DATA_DIR / "queue"
if CELERY_BROKER_URL.startswith("filesystem://"):
    queue_dirs = ("in", "processed", "control")
    for queue_dir in (_QUEUE_DIR, *(_QUEUE_DIR / name for name in queue_dirs)):
        queue_dir.mkdir(exist_ok=True, mode=0o700)  # task messages carry job ids and data
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # The exchange tables (celery.exchange, celery.pidbox.exchange); kombu's default is
        # ./control, under whatever directory the command was started in.
        "control_folder": str(_QUEUE_DIR / "control"),
        "data_folder_in": str(_QUEUE_DIR / "in"),
        "data_folder_out": str(_QUEUE_DIR / "in"),
        "processed_folder": str(_QUEUE_DIR / "processed"),
        "store_processed": False,
        "polling_interval": 0.05,
    }
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

# Mailplane's own settings.
MAILPLANE: dict[str, Any] = {
    # State shared by every process and host: per-destination connection slots of the
    # delivery workers, failed-login windows of the SMTP and IMAP servers. Default: the
    # broker, when that is Redis; embedded mode has none and keeps such state per process.
    "REDIS_URL": os.environ.get(
        "MAILPLANE_REDIS_URL",
        CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else "",
    ),
    # Host names mail clients use on shared infrastructure (userinfo ibx_smtp / ibx_imap).
    "SHARED_SMTP_HOST": os.environ.get("MAILPLANE_SMTP_HOST", "localhost"),
    "SHARED_IMAP_HOST": os.environ.get("MAILPLANE_IMAP_HOST", "localhost"),
    # The platform's own sender (identity confirmations); default no-reply@PLATFORM_DOMAIN.
    "SYSTEM_SENDER": os.environ.get(
        "MAILPLANE_SYSTEM_SENDER",
        "no-reply@" + os.environ.get("MAILPLANE_PLATFORM_DOMAIN", "mailplane.localhost"),
    ),
    # Mail listeners. Embedded defaults are unprivileged (and clear of a local Postfix);
    # production sets 465/587/25/993/143 through the environment.
    "SMTP_BIND": os.environ.get("MAILPLANE_SMTP_BIND", "127.0.0.1"),
    "SMTP_PORT": config.env_int("MAILPLANE_SMTP_PORT", 4465),
    "SUBMISSION_PORT": config.env_int("MAILPLANE_SUBMISSION_PORT", 4587),
    "MX_PORT": config.env_int("MAILPLANE_MX_PORT", 2525),
    "SMTP_MAX_MESSAGE_BYTES": config.env_int("MAILPLANE_SMTP_MAX_MESSAGE_BYTES", 25 * 1024 * 1024),
    "SMTP_MAX_RECIPIENTS": config.env_int("MAILPLANE_SMTP_MAX_RECIPIENTS", 100),
    # Processes per SMTP listener service sharing its ports (SO_REUSEPORT); 0 = one per CPU.
    "SMTP_PROCESSES": config.env_int("MAILPLANE_SMTP_PROCESSES", 1),
    # IMAP: implicit TLS (993 in production) and STARTTLS (143 in production).
    "IMAP_PORT": config.env_int("MAILPLANE_IMAP_PORT", 9993),
    "IMAP_STARTTLS_PORT": config.env_int("MAILPLANE_IMAP_STARTTLS_PORT", 1143),
    "IMAP_BIND": os.environ.get("MAILPLANE_IMAP_BIND", "127.0.0.1"),
    # The platform's own DNS names, used in the records customers publish.
    "PLATFORM_DOMAIN": os.environ.get("MAILPLANE_PLATFORM_DOMAIN", "mailplane.localhost"),
    "MX_HOST": os.environ.get("MAILPLANE_MX_HOST", ""),
    # What tracking domains are CNAMEs to (tracking/); empty = track.<PLATFORM_DOMAIN>.
    "TRACKING_HOST": os.environ.get("MAILPLANE_TRACKING_HOST", ""),
    # Servers' generated inbound addresses are <token>@INBOUND_HOST (inbound/); empty =
    # inbound.<PLATFORM_DOMAIN>. Its MX record names the MX host, as inbound domains' do.
    "INBOUND_HOST": os.environ.get("MAILPLANE_INBOUND_HOST", ""),
    # Attachments' decoded bytes an inbound webhook payload carries at most (base64 in the
    # JSON); past it `content` is null and the raw message has them.
    "INBOUND_ATTACHMENTS_MAX_BYTES": config.env_int(
        "MAILPLANE_INBOUND_ATTACHMENTS_MAX_BYTES", 10 * 1024 * 1024
    ),
    # "host:port" of the resolver for domain checks and MX lookups; empty = system resolver.
    "DNS_RESOLVER": os.environ.get("MAILPLANE_DNS_RESOLVER", ""),
    # Domains under .test/.example/.invalid/.localhost verified without DNS (embedded only).
    "ACCEPT_RESERVED_DOMAINS": config.accept_reserved_domains(),
    "DNS_TIMEOUT": float(os.environ.get("MAILPLANE_DNS_TIMEOUT", "3")),
    "STORAGE_ROOT": os.environ.get("MAILPLANE_STORAGE_ROOT", str(DATA_DIR / "storage")),
    "BULK_CSV_MAX_BYTES": config.env_int("MAILPLANE_BULK_CSV_MAX_BYTES", 5 * 1024 * 1024),
    # JSON request bodies: larger is a 413, deeper nesting a 400 (api/parsers.py).
    "API_MAX_BODY_BYTES": config.env_int("MAILPLANE_API_MAX_BODY_BYTES", 1024 * 1024),
    "API_MAX_JSON_DEPTH": config.env_int("MAILPLANE_API_MAX_JSON_DEPTH", 32),
    # Wrong API keys per client IP within the window before 429 (api/throttling.py).
    "API_AUTH_FAILURES_PER_IP": config.env_int("MAILPLANE_API_AUTH_FAILURES_PER_IP", 20),
    "API_AUTH_FAILURE_WINDOW": config.env_int("MAILPLANE_API_AUTH_FAILURE_WINDOW", 300),
    # Requests per window under /api/, "<requests>/<seconds>" ("0": none): per credential
    # presented and per client address (api/ratelimits.py). Shared through REDIS_URL.
    "API_RATE_PER_KEY": os.environ.get("MAILPLANE_API_RATE_PER_KEY", "12000/60"),
    "API_RATE_PER_IP": os.environ.get("MAILPLANE_API_RATE_PER_IP", "24000/60"),
    # Reverse proxies whose X-Forwarded-For names the client (default: none, REMOTE_ADDR).
    "TRUSTED_PROXIES": [
        p.strip() for p in os.environ.get("MAILPLANE_TRUSTED_PROXIES", "").split(",") if p.strip()
    ],
    "BULK_CSV_MAX_ROWS": config.env_int("MAILPLANE_BULK_CSV_MAX_ROWS", 10_000),
    # Mailbox lists and details show each password, as the compatible service's do (its
    # clients read them there); false shows null (the CSV exports still carry them).
    "API_SHOW_PASSWORDS": config.env_bool("MAILPLANE_API_SHOW_PASSWORDS", True),
    # DNS-provider APIs (dnsproviders/): base URLs, and seconds per request.
    "CLOUDFLARE_API_URL": os.environ.get(
        "MAILPLANE_CLOUDFLARE_API_URL", "https://api.cloudflare.com/client/v4"
    ),
    "GODADDY_API_URL": os.environ.get("MAILPLANE_GODADDY_API_URL", "https://api.godaddy.com"),
    "DNS_PROVIDER_TIMEOUT": float(os.environ.get("MAILPLANE_DNS_PROVIDER_TIMEOUT", "15")),
    # MI Shield's rspamd (shield/): its URL ("" = the built-in checks only; `mailplane serve`
    # sets it when it starts rspamd, MAILPLANE_RSPAMD=1) and seconds per check.
    "RSPAMD_URL": os.environ.get("MAILPLANE_RSPAMD_URL", "").strip(),
    "RSPAMD_TIMEOUT": float(os.environ.get("MAILPLANE_RSPAMD_TIMEOUT", "2")),
    # Webhooks may call private, loopback and link-local addresses (webhooks/guard.py):
    # on in embedded mode (one machine, its receivers local) and test runs, off in
    # production, where such a URL would reach our own network (SSRF).
    "WEBHOOKS_ALLOW_PRIVATE": config.env_bool(
        "MAILPLANE_WEBHOOKS_ALLOW_PRIVATE", config.embedded_mode() or config.under_pytest()
    ),
    # The automatic pause of a server or key (reputation/pause.py; the defaults follow SES
    # and Gmail): hard-bounce and complaint rates over the window, judged from this volume.
    "REPUTATION_PAUSE_BOUNCE_RATE": float(
        os.environ.get("MAILPLANE_REPUTATION_PAUSE_BOUNCE_RATE", "0.10")
    ),
    "REPUTATION_PAUSE_COMPLAINT_RATE": float(
        os.environ.get("MAILPLANE_REPUTATION_PAUSE_COMPLAINT_RATE", "0.003")
    ),
    "REPUTATION_PAUSE_MIN_VOLUME": config.env_int("MAILPLANE_REPUTATION_PAUSE_MIN_VOLUME", 1000),
    "REPUTATION_PAUSE_WINDOW_HOURS": config.env_int("MAILPLANE_REPUTATION_PAUSE_WINDOW_HOURS", 24),
    # Whether an account may resume its own paused server or key through the API (POST
    # /api/servers/{id}/resume/): yes on a self-hosted install, where the account's owner
    # is the operator; a host of many tenants sets it false, leaving the CLI's resume.
    "REPUTATION_ACCOUNT_RESUME": config.env_bool("MAILPLANE_REPUTATION_ACCOUNT_RESUME", True),
    # The cell this host's processes serve (monitoring labels; dedicated cells: issue 14).
    "CELL": os.environ.get("MAILPLANE_CELL", "shared").strip() or "shared",
    # Bearer token for GET /metrics. Unset: loopback clients only, and in embedded mode only
    # (behind a reverse proxy on the same host every client looks like loopback).
    "METRICS_TOKEN": os.environ.get("MAILPLANE_METRICS_TOKEN", "").strip(),
    # Where recipients reach the control plane over HTTPS: broadcast messages' one-click
    # unsubscribe links (RFC 8058 requires https) are <PUBLIC_URL>/unsubscribe/<token>/;
    # sender identity confirmations <PUBLIC_URL>/api/sender-identities/confirm/?token=….
    "PUBLIC_URL": os.environ.get(
        "MAILPLANE_PUBLIC_URL", f"https://{os.environ.get('MAILPLANE_SMTP_HOST', 'localhost')}"
    ).rstrip("/"),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("MAILPLANE_LOG_LEVEL", "INFO")},
    # httpx logs every request at INFO; the DNS-provider clients log what matters.
    "loggers": {"django.db.backends": {"level": "WARNING"}, "httpx": {"level": "WARNING"}},
}
