"""gunicorn entry point: ``gunicorn sandbox_api.wsgi:app``."""

from sandbox_api import create_app

app = create_app()
