"""Logging set-up, one place for every process of the fleet (server, API, workers, beat, CLI).

- The level is LOG_LEVEL (``DEBUG=true``: debug). Routine traffic stays below INFO: Celery's
  "received"/"succeeded" line of every job and beat's "sending due task" of every tick are shown
  only at debug; what a sandbox goes through is one INFO line each, from the fleet's own modules;
  warnings and errors always.
- ``LOG_FORMAT=json``: one JSON object a line (time, level, logger, role, pid, message, exc).
- Tracebacks: an ERROR carries its traceback always; a WARNING about an exception carries only
  ``(ExcType: message)`` unless DEBUG is on.
- Tool arguments and output are never logged: jobs describe themselves by sandbox name and
  operation only (sandbox_core.jobs), and tasks return nothing to Celery.

gunicorn takes :func:`dict_config` as its ``logconfig_dict`` (sandbox_cli/gunicorn_conf.py), so the
API's loggers under gunicorn are configured like every other process's.
"""

from __future__ import annotations

import json
import logging
import logging.config
import time
from typing import Any

from .settings import Settings

#: Loggers whose INFO lines are routine traffic: shown only at debug.
ROUTINE = ("celery.beat", "celery.worker.strategy", "celery.app.trace")
#: gunicorn's request log: on only with DEBUG (as before).
ACCESS = "gunicorn.access"

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(role)s] %(name)s: %(message)s"


def level_of(settings: Settings, override: str | None = None) -> str:
    """The level name in force: an explicit override (a command line's), else debug if DEBUG,
    else LOG_LEVEL."""
    if override:
        return override.upper()
    return "DEBUG" if settings.DEBUG else settings.LOG_LEVEL.upper()


def dict_config(settings: Settings, role: str = "", level: str | None = None) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of a fleet process."""
    name = level_of(settings, level)
    debug = name == "DEBUG"
    quiet = "DEBUG" if debug else "WARNING"
    formatter = JsonFormatter if settings.LOG_FORMAT == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"role": {"()": RoleFilter, "role": role}},
        "formatters": {"fleet": {"()": formatter, "debug": settings.DEBUG}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                "formatter": "fleet", "filters": ["role"]}},
        "root": {"level": name, "handlers": ["stderr"]},
        "loggers": {
            **{logger: {"level": quiet, "handlers": [], "propagate": True} for logger in ROUTINE},
            "gunicorn.error": {"level": name, "handlers": [], "propagate": True},
            ACCESS: {"level": "INFO" if settings.DEBUG else "WARNING", "handlers": [],
                     "propagate": True},
            # Chatty at debug and nothing an operator needs from them.
            "urllib3": {"level": "INFO" if debug else "WARNING"},
            "docker": {"level": "INFO" if debug else "WARNING"},
        },
    }


def setup(settings: Settings, role: str = "", level: str | None = None) -> None:
    """Configure this process's logging (idempotent: replaces the root logger's handlers)."""
    logging.config.dictConfig(dict_config(settings, role, level))
    logging.captureWarnings(True)


class RoleFilter(logging.Filter):
    """Stamps each record with the process's role (api, worker-lifecycle, beat, server...)."""

    def __init__(self, role: str = "") -> None:
        super().__init__()
        self.role = role or "-"

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "role"):
            record.role = self.role
        return True


def _exception(record: logging.LogRecord, debug: bool, formatter: logging.Formatter) -> str:
    """The traceback (ERROR and above, or DEBUG), else a one-line ``ExcType: message``."""
    if not record.exc_info or not record.exc_info[0]:
        return ""
    if debug or record.levelno >= logging.ERROR:
        return formatter.formatException(record.exc_info)
    exc = record.exc_info[1]
    return f"{type(exc).__name__}: {exc}"


class TextFormatter(logging.Formatter):
    def __init__(self, debug: bool = False) -> None:
        super().__init__(TEXT_FORMAT)
        self.debug = debug

    def format(self, record: logging.LogRecord) -> str:
        exc = _exception(record, self.debug, self)
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            line = super().format(record)
        finally:
            record.exc_info, record.exc_text = saved
        if not exc:
            return line
        return f"{line}\n{exc}" if "\n" in exc else f"{line} ({exc})"


class JsonFormatter(logging.Formatter):
    def __init__(self, debug: bool = False) -> None:
        super().__init__()
        self.debug = debug

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "role": getattr(record, "role", "-"),
            "pid": record.process,
            "message": record.getMessage(),
        }
        exc = _exception(record, self.debug, self)
        if exc:
            entry["exc"] = exc
        return json.dumps(entry, ensure_ascii=False, default=str)
