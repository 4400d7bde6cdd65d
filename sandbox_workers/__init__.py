"""Celery workers: they own their host's sandboxes, ports and pools."""

from .app import app

__all__ = ["app"]
