"""sandbox_core.logs without a fleet: levels, routine loggers, tracebacks, JSON."""

from __future__ import annotations

import json
import logging
import logging.config

import pytest

from sandbox_core import logs
from sandbox_core.settings import parse_settings


@pytest.fixture
def captured(capsys):
    def setup(**values: str):
        logs.setup(parse_settings(values), role="test")
        return capsys

    yield setup
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
                               "root": {"level": "WARNING", "handlers": []}})


def boom() -> Exception:
    try:
        raise ValueError("bad thing")
    except ValueError as e:
        return e


def test_info_keeps_the_fleet_s_lines_and_hides_routine_ones(captured):
    cap = captured()
    logging.getLogger("sandbox_workers.lifecycle").info("sandbox sb1: warm on port 1")
    logging.getLogger("celery.app.trace").info("Task x succeeded in 0.01s: None")
    logging.getLogger("celery.beat").info("Scheduler: Sending due task refill-pools")
    logging.getLogger("celery.app.trace").error("Task x raised unexpected: boom")
    logging.getLogger("gunicorn.access").info('"GET /health HTTP/1.1" 200')
    err = cap.readouterr().err
    assert "INFO [test] sandbox_workers.lifecycle: sandbox sb1: warm on port 1" in err
    assert "succeeded" not in err and "Sending due task" not in err and "/health" not in err
    assert "raised unexpected" in err  # errors always


def test_tracebacks_on_errors_always_on_warnings_only_with_debug(captured):
    cap = captured()
    log = logging.getLogger("sandbox_workers.liveness")
    log.warning("heartbeat failed", exc_info=boom())
    log.error("job failed", exc_info=boom())
    err = cap.readouterr().err
    warning, error = err.split("job failed")
    assert "heartbeat failed (ValueError: bad thing)" in warning and "Traceback" not in warning
    assert "Traceback" in error

    cap = captured(DEBUG="true")
    log.warning("heartbeat failed", exc_info=boom())
    logging.getLogger("celery.app.trace").info("Task x succeeded in 0.01s: None")
    logging.getLogger("gunicorn.access").info('"GET /health HTTP/1.1" 200')
    err = cap.readouterr().err
    assert "Traceback" in err and "succeeded" in err and "/health" in err


def test_json_lines_parse(captured):
    cap = captured(LOG_FORMAT="json", LOG_LEVEL="debug")
    logging.getLogger("sandbox_core.fleet").debug("sandbox sb2: released \u00e9")
    logging.getLogger("sandbox_core.fleet").warning("oops", exc_info=boom())
    lines = [json.loads(line) for line in cap.readouterr().err.splitlines()]
    assert lines[0]["level"] == "DEBUG" and lines[0]["role"] == "test"
    assert lines[0]["message"] == "sandbox sb2: released \u00e9"
    assert lines[0]["logger"] == "sandbox_core.fleet" and lines[0]["time"].endswith("Z")
    assert lines[1]["exc"] == "ValueError: bad thing"


def test_log_level_setting_is_checked():
    from sandbox_core.errors import SettingsError

    with pytest.raises(SettingsError, match="LOG_LEVEL='loud' is not valid"):
        parse_settings({"LOG_LEVEL": "loud"})
    assert parse_settings({"LOG_LEVEL": "WARNING"}).LOG_LEVEL == "warning"
