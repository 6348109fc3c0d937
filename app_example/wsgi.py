"""WSGI entry point for Gunicorn: ``app_example.wsgi:app``."""

from app_example.app import create_app

app = create_app()
