"""``runtime-sandbox-builder``: build sandbox images with no container registry.

``runtime-sandbox-builder base`` (or ``all``) makes the Debian base ``sandbox-fleet/rootfs:bookworm``
with ``images/rootfs/build-rootfs.sh`` if it is missing, fetches the image's wheels on the host (RUN
steps in ``docker build`` have no route to a package index), runs ``docker build`` through the
docker CLI (progress shown, layer cache used), then starts the image once on 127.0.0.1 and checks
that its agent answers. ``runtime-sandbox-builder NAME --dockerfile_path PATH`` builds a custom image.
Images are named by :func:`image_uri`, by default ``agentscope/runtime-sandbox-<type>:latest``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import click

IMAGES_DIR = Path(__file__).resolve().parents[1] / "images"
ROOTFS_SCRIPT = IMAGES_DIR / "rootfs" / "build-rootfs.sh"
ROOTFS_IMAGE = "sandbox-fleet/rootfs:bookworm"
IMAGE_PYTHON = "3.11"  # Debian bookworm's python3: the wheels must match the image, not this host
CHECK_TIMEOUT = 60.0


def image_uri(type_name: str, env: Mapping[str, str]) -> str:
    """The image of a sandbox type, named as upstream names it.

    ``{RUNTIME_SANDBOX_REGISTRY/}{RUNTIME_SANDBOX_IMAGE_NAMESPACE}/runtime-sandbox-<type>:{RUNTIME_SANDBOX_IMAGE_TAG}``
    """
    registry = env.get("RUNTIME_SANDBOX_REGISTRY", "")
    namespace = env.get("RUNTIME_SANDBOX_IMAGE_NAMESPACE", "agentscope")
    tag = env.get("RUNTIME_SANDBOX_IMAGE_TAG", "latest")
    return f"{registry + '/' if registry else ''}{namespace}/runtime-sandbox-{type_name}:{tag}"


@dataclass(frozen=True)
class ImageSpec:
    """How to build one built-in image type."""

    name: str
    dockerfile: Path
    context: Path = IMAGES_DIR
    parent: str | None = None  # a built-in type whose image is passed as --build-arg BASE_IMAGE
    requirements: Path | None = None  # wheels fetched on the host into <dockerfile dir>/wheels/
    needs_rootfs: bool = False  # FROM sandbox-fleet/rootfs:bookworm unless BASE_IMAGE is overridden


BUILTIN: dict[str, ImageSpec] = {
    "base": ImageSpec("base", IMAGES_DIR / "base" / "Dockerfile",
                      requirements=IMAGES_DIR / "base" / "requirements.txt", needs_rootfs=True),
}


def build_order(names: Sequence[str]) -> list[ImageSpec]:
    """The specs to build for ``names``, parents first, each once."""
    order: list[ImageSpec] = []

    def visit(name: str) -> None:
        spec = BUILTIN[name]
        if spec.parent:
            visit(spec.parent)
        if spec not in order:
            order.append(spec)

    for name in names:
        visit(name)
    return order


# ---- steps ---------------------------------------------------------------------------------------

def _echo(message: str) -> None:
    click.secho(f"==> {message}", fg="cyan", err=True)


def _run(argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
    """Run a command with its output shown; raise ClickException when it fails."""
    _echo(" ".join(argv))
    try:
        subprocess.run(list(argv), check=True, env=dict(env) if env is not None else None)
    except FileNotFoundError:
        raise click.ClickException(f"{argv[0]} is not installed") from None
    except subprocess.CalledProcessError as exc:
        raise click.ClickException(f"{argv[0]} failed with exit code {exc.returncode}") from None


def image_exists(name: str) -> bool:
    try:
        return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0
    except FileNotFoundError:
        raise click.ClickException("the docker CLI is not installed") from None


def ensure_rootfs(env: Mapping[str, str]) -> None:
    if image_exists(ROOTFS_IMAGE):
        _echo(f"{ROOTFS_IMAGE} is present")
        return
    _run(["bash", str(ROOTFS_SCRIPT)], env={**env, "ROOTFS_IMAGE": ROOTFS_IMAGE})


def _pip_platforms() -> list[str]:
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine().lower())
    # bookworm has glibc 2.36; pip takes each tag literally, so list the usual ones.
    return [f"manylinux_2_36_{arch}", f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}"]


def fetch_wheels(requirements: Path) -> Path:
    """Download the wheels of ``requirements`` for the image's Python, next to the Dockerfile.

    Skipped when the folder already holds the wheels of exactly this requirements file.
    """
    wheels = requirements.parent / "wheels"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    stamp = wheels / ".requirements.sha256"
    if stamp.exists() and stamp.read_text().strip() == digest:
        _echo(f"wheels for {requirements.relative_to(IMAGES_DIR)} are cached in {wheels}")
        return wheels
    if wheels.exists():
        shutil.rmtree(wheels)
    wheels.mkdir(parents=True)
    argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
            "--python-version", IMAGE_PYTHON, "--implementation", "cp", "-d", str(wheels),
            "-r", str(requirements)]
    for plat in _pip_platforms():
        argv += ["--platform", plat]
    _run(argv)
    shutil.copyfile(requirements, wheels / "requirements.txt")
    stamp.write_text(digest + "\n")
    return wheels


def docker_build(tag: str, dockerfile: Path, context: Path, build_args: Mapping[str, str],
                 env: Mapping[str, str], no_cache: bool = False) -> None:
    argv = ["docker", "build", "-f", str(dockerfile), "-t", tag]
    for key, value in build_args.items():
        argv += ["--build-arg", f"{key}={value}"]
    if no_cache:
        argv.append("--no-cache")
    argv.append(str(context))
    # The classic builder: Debian's docker.io has no buildx, and BuildKit without it refuses to run.
    _run(argv, env={**env, "DOCKER_BUILDKIT": env.get("DOCKER_BUILDKIT", "0")})


def check_image(tag: str) -> None:
    """Start ``tag`` on a loopback port, wait for ``/fastapi/healthz``, run ``echo``, remove it."""
    token = secrets.token_hex(16)
    _echo(f"checking {tag}: healthz and an echo through the shell tool")
    started = subprocess.run(
        ["docker", "run", "-d", "--rm", "-p", "127.0.0.1::80", "-e", f"SECRET_TOKEN={token}", tag],
        capture_output=True, text=True)
    if started.returncode != 0:
        raise click.ClickException(f"cannot start {tag}: {started.stderr.strip()}")
    container = started.stdout.strip()
    try:
        port = subprocess.run(["docker", "port", container, "80/tcp"], capture_output=True, text=True,
                              check=True).stdout.split()[0].rsplit(":", 1)[1]
        base = f"http://127.0.0.1:{port}/fastapi"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        deadline = time.monotonic() + CHECK_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(urllib.request.Request(f"{base}/healthz", headers=headers),
                                            timeout=2) as response:
                    if response.read() == b"OK":
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True)
                raise click.ClickException(f"{tag} did not answer healthz within {CHECK_TIMEOUT:.0f}s:\n"
                                           f"{logs.stdout}{logs.stderr}")
            time.sleep(0.1)
        request = urllib.request.Request(f"{base}/tools/run_shell_command", headers=headers,
                                         data=json.dumps({"command": "echo sandbox-ok"}).encode())
        with urllib.request.urlopen(request, timeout=30) as response:
            result = json.loads(response.read())
        if result["content"][0]["text"] != "sandbox-ok\n":
            raise click.ClickException(f"unexpected echo result from {tag}: {result}")
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
    _echo(f"{tag} answers")


def load_extension(ext: str) -> None:
    """Import a Python file or module (as upstream's ``--extension``), e.g. to register types."""
    path = Path(ext)
    if ext.endswith(".py") or path.is_file():
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise click.ClickException(f"cannot load extension {ext}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
    else:
        importlib.import_module(ext)


def build_builtin(spec: ImageSpec, env: Mapping[str, str], build_args: dict[str, str], check: bool,
                  no_cache: bool) -> str:
    tag = image_uri(spec.name, env)
    args = dict(build_args)
    if spec.parent and "BASE_IMAGE" not in args:
        args["BASE_IMAGE"] = image_uri(spec.parent, env)
    if spec.needs_rootfs and "BASE_IMAGE" not in args:
        ensure_rootfs(env)
    if spec.requirements is not None:
        fetch_wheels(spec.requirements)
    docker_build(tag, spec.dockerfile, spec.context, args, env, no_cache)
    if check:
        check_image(tag)
    return tag


def _parse_build_args(values: Sequence[str]) -> dict[str, str]:
    args = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {value!r}", param_hint="--build-arg")
        args[key] = val
    return args


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("build_type", default="base")
@click.option("--dockerfile_path", "--dockerfile-path", "dockerfile_path", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Dockerfile of a custom image (required for names that are not built in).")
@click.option("--extension", multiple=True, help="Python file or module to import first (repeatable).")
@click.option("--build-arg", "build_arg", multiple=True, metavar="KEY=VALUE",
              help="Passed to docker build (repeatable), e.g. BASE_IMAGE=python:3.11-slim.")
@click.option("--context", "context", default=None,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Build context of a custom image (default: the current folder, as upstream).")
@click.option("--no-cache", is_flag=True, help="Pass --no-cache to docker build.")
@click.option("--no-check", is_flag=True, help="Do not start the built image to check its agent.")
def main(build_type: str, dockerfile_path: Path | None, extension: Sequence[str], build_arg: Sequence[str],
         context: Path | None, no_cache: bool, no_check: bool) -> None:
    """Build the sandbox image BUILD_TYPE (default: base; "all" builds every built-in one)."""
    env = os.environ
    for ext in extension:
        load_extension(ext)
    build_args = _parse_build_args(build_arg)
    if dockerfile_path is not None:
        if build_type == "all":
            raise click.UsageError("--dockerfile_path builds one image: give its name, not 'all'")
        tag = image_uri(build_type, env)
        docker_build(tag, dockerfile_path, context or Path.cwd(), build_args, env, no_cache)
        if not no_check:
            check_image(tag)
        click.echo(tag)
        return
    if build_type == "all":
        names = list(BUILTIN)
    elif build_type in BUILTIN:
        names = [build_type]
    else:
        known = ", ".join([*BUILTIN, "all"])
        raise click.UsageError(f"unknown sandbox image {build_type!r}; known: {known}. "
                               "A custom image needs --dockerfile_path.")
    for spec in build_order(names):
        click.echo(build_builtin(spec, env, build_args, not no_check, no_cache))


if __name__ == "__main__":
    main()
