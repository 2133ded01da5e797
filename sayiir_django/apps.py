"""The app config: finds each installed app's ``workflows.py``, as the admin finds ``admin.py``."""

from __future__ import annotations

from django.apps import AppConfig


class SayiirConfig(AppConfig):
    name = "sayiir_django"
    label = "sayiir_django"
    verbose_name = "Sayiir workflows"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Importing registers the system checks. Discovery only imports modules: a
        # worker is never started from here (``manage.py sayiir worker`` runs one).
        from sayiir_django import checks, registry

        checks.register_all()
        registry.autodiscover()
