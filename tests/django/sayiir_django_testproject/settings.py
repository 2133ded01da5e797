"""Settings of the test project; databases come from the environment the tests set.

``default`` is a SQLite file, ``postgres`` the PostgreSQL server of
``SAYIIR_TEST_POSTGRES_URL``. Each test run gets databases of its own (see
``tests/django/conftest.py``); a worker subprocess is pointed at the same ones.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

SECRET_KEY = "sayiir-django-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "sayiir_django_testproject.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "sayiir_django",
    "sayiir_django_testproject.shop",
]
for extra in filter(None, os.environ.get("SAYIIR_DJANGO_EXTRA_APPS", "").split(",")):
    INSTALLED_APPS.append(extra)

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
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
STATIC_URL = "/static/"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast test logins

_postgres = urlsplit(
    os.environ.get("SAYIIR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
)
_sqlite_mode = os.environ.get("SAYIIR_DJANGO_SQLITE_MODE", "IMMEDIATE")

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SAYIIR_DJANGO_SQLITE", "sayiir-django-tests.sqlite3"),
        "OPTIONS": {
            "transaction_mode": _sqlite_mode,
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
        "TEST": {"NAME": os.environ.get("SAYIIR_DJANGO_SQLITE_TEST")},
    },
    "postgres": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("SAYIIR_DJANGO_POSTGRES", (_postgres.path or "/postgres")[1:]),
        "USER": _postgres.username or "postgres",
        "PASSWORD": _postgres.password or "",
        "HOST": _postgres.hostname or "127.0.0.1",
        "PORT": str(_postgres.port or 5432),
        # Independent of "default": a run may set up only this one.
        "TEST": {"NAME": os.environ.get("SAYIIR_DJANGO_POSTGRES_TEST"), "DEPENDENCIES": []},
    },
}

SAYIIR = {
    "DATABASE": os.environ.get("SAYIIR_DJANGO_DATABASE", "default"),
    "POLL_INTERVAL": 0.2,
}
