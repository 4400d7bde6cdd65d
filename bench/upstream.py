"""The upstream server (agentscope-runtime 1.1.6.post2) and its base image, for side-by-side runs.

- :func:`ensure_venv`: the upstream package in a virtualenv of its own (its console scripts are
  named like ours, so never the project's .venv), ``~/.cache/sandbox-fleet/upstream-venv``, reused
  when it already holds that version;
- :func:`ensure_image`: upstream's base image built with no registry, as
  ../shared/docs/upstream-anchor.md describes (bench/upstream_image/Dockerfile), tagged
  ``agentscope/runtime-sandbox-base:<UPSTREAM_TAG>`` so it never replaces the fleet's ``latest``;
  rebuilt only when its inputs change (a label holds their digest);
- :class:`UpstreamServer`: its ``runtime-sandbox-server`` in a subprocess with a private config,
  shaped like :class:`tests.localfleet.LocalFleet` (``url``, ``token``, ``prefix``, ``data``,
  ``containers``, ``stop``) so the workloads drive both the same way.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from sandbox_cli import builder
from tests.localfleet import LocalFleet

VERSION = "1.1.6.post2"
UPSTREAM_TAG = f"upstream-{VERSION}"
IMAGE = f"agentscope/runtime-sandbox-base:{UPSTREAM_TAG}"
CACHE = Path(os.environ.get("SANDBOX_FLEET_CACHE", Path.home() / ".cache" / "sandbox-fleet"))
VENV = CACHE / "upstream-venv"
CONTEXT = CACHE / "upstream-image"  # the generated build context (wheels, debs, app files)
SOURCES = Path(__file__).resolve().parent / "upstream_image"
# Upstream's Dockerfile installs these on node:22-slim; the rootfs already has python3 and git.
DEBS = ("curl", "python3", "python3-venv", "git", "supervisor", "nginx", "gettext-base")
DIGEST_LABEL = "io.sandbox-fleet.bench.inputs"
APP_FILES = ("app.py", "routers", "dependencies")


def _echo(message: str) -> None:
    print(f"[upstream] {message}", file=sys.stderr, flush=True)


def ensure_venv() -> Path:
    """The upstream venv's python, installing agentscope-runtime==VERSION into it when missing."""
    python = VENV / "bin" / "python"
    probe = "import importlib.metadata as m; print(m.version('agentscope-runtime'))"
    if python.exists():
        found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip() == VERSION:
            _echo(f"agentscope-runtime {VERSION} is installed in {VENV}")
            return python
        shutil.rmtree(VENV)
    _echo(f"installing agentscope-runtime {VERSION} into {VENV}")
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    f"agentscope-runtime=={VERSION}"], check=True, timeout=1800)
    return python


def _app_dir(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import agentscope_runtime.sandbox.box.shared as s, os;"
                          "print(os.path.dirname(s.__file__))"], capture_output=True, text=True,
                         check=True)
    return Path(out.stdout.strip())


def _fetch_wheels(requirements: Path, dest: Path) -> None:
    """The wheels of ``requirements`` for the image's Python (cp311 manylinux), cached by digest."""
    stamp = dest / ".requirements.sha256"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == digest:
        return
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    argv = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
            "--only-binary=:all:", "--python-version", builder.IMAGE_PYTHON, "--implementation", "cp",
            "-d", str(dest), "-r", str(requirements)]
    for plat in builder._pip_platforms():
        argv += ["--platform", plat]
    subprocess.run(argv, check=True, timeout=1800)
    shutil.copyfile(requirements, dest / "requirements.txt")
    stamp.write_text(digest + "\n")


def _tree_digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for root in paths:
        files = sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts) \
            if root.is_dir() else [root]
        for path in files:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def ensure_image(python: Path) -> str:
    """Upstream's base image, built offline unless an image with the same inputs exists."""
    app = _app_dir(python)
    inputs = _tree_digest([SOURCES, *(app / name for name in APP_FILES)])
    label = f'{{{{index .Config.Labels "{DIGEST_LABEL}"}}}}'
    labels = subprocess.run(["docker", "image", "inspect", "-f", label, IMAGE], capture_output=True,
                            text=True)
    if labels.returncode == 0 and labels.stdout.strip() == inputs:
        _echo(f"{IMAGE} is built (inputs {inputs})")
        return IMAGE
    _echo(f"building {IMAGE} offline (inputs {inputs})")
    started = time.monotonic()
    env = os.environ
    builder.ensure_rootfs(env)
    CONTEXT.mkdir(parents=True, exist_ok=True)
    for name in ("Dockerfile", "supervisord.conf", "nginx.conf.template", "requirements.txt"):
        shutil.copyfile(SOURCES / name, CONTEXT / name)
    shutil.copyfile(builder.IMAGES_DIR / "base" / "sandbox-install-debs", CONTEXT / "sandbox-install-debs")
    shutil.rmtree(CONTEXT / "app", ignore_errors=True)
    for name in APP_FILES:  # upstream's in-sandbox app, from the installed wheel, never committed
        source = app / name
        if source.is_dir():
            shutil.copytree(source, CONTEXT / "app" / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (CONTEXT / "app").mkdir(exist_ok=True)
            shutil.copyfile(source, CONTEXT / "app" / name)
    _fetch_wheels(CONTEXT / "requirements.txt", CONTEXT / "wheels")
    builder._run(["bash", str(builder.FETCH_DEBS_SCRIPT), builder.ROOTFS_IMAGE, str(CONTEXT / "debs"),
                  *DEBS], env=env)
    builder.docker_build(IMAGE, CONTEXT / "Dockerfile", CONTEXT, {}, env)
    builder.check_image(IMAGE)
    # The digest label is added last, so an image that failed its build or check never looks cached.
    marked = subprocess.run(["docker", "build", "-q", "-t", IMAGE, "--label", f"{DIGEST_LABEL}={inputs}",
                             "-"],
                            input=f"FROM {IMAGE}\n", text=True, capture_output=True,
                            env={**env, "DOCKER_BUILDKIT": "0"})
    if marked.returncode != 0:
        raise RuntimeError(f"labelling {IMAGE} failed: {marked.stderr}")
    _echo(f"{IMAGE} built in {time.monotonic() - started:.0f} s")
    return IMAGE


def _die_with_parent() -> None:
    """In the child: SIGTERM when the bench dies, so the server never outlives it."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class UpstreamServer(LocalFleet):
    """upstream's runtime-sandbox-server with a private config; LocalFleet's HTTP and observing
    helpers work on it unchanged (same routes, same ``{"data": ...}`` answers)."""

    def __init__(self, folder: Path, python: Path, **settings: object) -> None:
        super().__init__(folder, HOST="127.0.0.1", DEFAULT_SANDBOX_TYPE="base",
                         RUNTIME_SANDBOX_IMAGE_TAG=UPSTREAM_TAG, REDIS_ENABLED="false", **settings)
        self.prefix = f"sbupstream_{secrets.token_hex(3)}_"
        self.values["CONTAINER_PREFIX_KEY"] = self.prefix
        # Upstream takes no FLEET_* settings; its PORT_RANGE is [start, end) as ours.
        self.values.pop("FLEET_HOST_NAME", None)
        self.config.write_text("".join(f"{k}={v}\n" for k, v in self.values.items()))
        self.python = python

    def start(self, *args: str, timeout: float = 60) -> UpstreamServer:
        # Upstream reads the image tag from the environment at import, not from --config.
        env = {**{k: v for k, v in os.environ.items() if k not in self.values},
               "RUNTIME_SANDBOX_IMAGE_TAG": UPSTREAM_TAG}
        script = self.python.parent / "runtime-sandbox-server"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([str(script), "--config", str(self.config), *args],
                                         cwd=self.config.parent, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)

        def answers() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the upstream server exited:\n{self.tail()}")
            try:
                return requests.get(f"{self.url}/health", timeout=5).ok
            except requests.RequestException:
                return False

        self.wait_for(answers, timeout, what="the upstream server to answer /health")
        return self
