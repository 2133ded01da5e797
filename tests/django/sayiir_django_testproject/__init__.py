"""A small Django project for sayiir_django's tests: settings, admin URLs, one app."""
