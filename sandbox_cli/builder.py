"""``runtime-sandbox-builder``: build sandbox images with no container registry.

``runtime-sandbox-builder base|filesystem|browser|gui|all`` makes the Debian base
``sandbox-fleet/rootfs:bookworm`` with ``images/rootfs/build-rootfs.sh`` if it is missing, fetches on
the host what each image installs (RUN steps in ``docker build`` have no route to a package index):
wheels (``pip download``), Debian packages (``images/tools/fetch-debs.sh``, resolved against the
parent image) and npm packages (``npm ci`` of a lockfile, then local patches); runs ``docker build``
through the docker CLI (progress shown, layer cache used), then starts the image once on 127.0.0.1
as the fleet would (all capabilities dropped but the image's label) and checks that its agent
answers and, for a type with MCP servers, that their tools are listed.
``runtime-sandbox-builder NAME --dockerfile_path PATH`` builds a custom image. Images are named by
:func:`image_uri`, by default ``agentscope/runtime-sandbox-<type>:latest``.
"""

from __future__ import annotations

import hashlib
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

from backends import capabilities
from sandbox_core import polling
from sandbox_core.errors import SandboxError
from sandbox_core.registry import BUILTIN_TYPES, get_spec, load_extensions
from sandbox_core.settings import Settings, load_settings

IMAGES_DIR = Path(__file__).resolve().parents[1] / "images"
ROOTFS_SCRIPT = IMAGES_DIR / "rootfs" / "build-rootfs.sh"
FETCH_DEBS_SCRIPT = IMAGES_DIR / "tools" / "fetch-debs.sh"
ROOTFS_IMAGE = "sandbox-fleet/rootfs:bookworm"
IMAGE_PYTHON = "3.11"  # Debian bookworm's python3: the wheels must match the image, not this host
CHECK_TIMEOUT = 60.0


def image_uri(type_name: str, settings: Settings) -> str:
    """The image of a sandbox type, named as upstream names it (the fleet's one rule).

    ``{RUNTIME_SANDBOX_REGISTRY/}{RUNTIME_SANDBOX_IMAGE_NAMESPACE}/runtime-sandbox-<type>:{RUNTIME_SANDBOX_IMAGE_TAG}``
    """
    return settings.image_uri(f"runtime-sandbox-{type_name}")


@dataclass(frozen=True)
class ImageSpec:
    """How to build one built-in image type."""

    name: str
    dockerfile: Path
    context: Path = IMAGES_DIR
    parent: str | None = None  # a built-in type whose image is passed as --build-arg BASE_IMAGE
    requirements: Path | None = None  # wheels fetched on the host into <dockerfile dir>/wheels/
    needs_rootfs: bool = False  # FROM sandbox-fleet/rootfs:bookworm unless BASE_IMAGE is overridden
    debs: tuple[str, ...] = ()  # Debian packages added to the parent, fetched into <dir>/debs/
    npm: Path | None = None  # a folder with package.json + package-lock.json (+ patches/*.patch)
    tool_group: str | None = None  # the MCP server whose tools the check expects to see


def _type(name: str, debs: tuple[str, ...], tool_group: str, npm: bool = True) -> ImageSpec:
    folder = IMAGES_DIR / name
    return ImageSpec(name, folder / "Dockerfile", context=folder, parent="base", debs=debs,
                     npm=folder / "npm" if npm else None, tool_group=tool_group)


BUILTIN: dict[str, ImageSpec] = {
    "base": ImageSpec("base", IMAGES_DIR / "base" / "Dockerfile",
                      requirements=IMAGES_DIR / "base" / "requirements.txt", needs_rootfs=True),
    "filesystem": _type("filesystem", ("nodejs",), "filesystem"),
    "browser": _type("browser", ("nodejs", "chromium"), "playwright"),
    "code-interpreter": ImageSpec("code-interpreter", IMAGES_DIR / "code-interpreter" / "Dockerfile",
                                  context=IMAGES_DIR / "code-interpreter", parent="base",
                                  requirements=IMAGES_DIR / "code-interpreter" / "requirements.txt"),
    # xrandr (x11-xserver-utils): e2b-desktop's get_screen_size (its screenshot: images/gui/scrot)
    "gui": _type("gui", ("xvfb", "x11vnc", "twm", "xdotool", "python3-xlib", "python3-tk",
                         "x11-xserver-utils", "only:novnc"), "computer-use", npm=False),
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


def fetch_debs(spec: ImageSpec, parent: str, env: Mapping[str, str]) -> Path:
    """The .debs ``spec`` adds to its parent image, resolved against that image, in <dir>/debs/."""
    dest = spec.dockerfile.parent / "debs"
    _run(["bash", str(FETCH_DEBS_SCRIPT), parent, str(dest), *spec.debs], env=env)
    return dest


def npm_install(folder: Path, env: Mapping[str, str]) -> Path:
    """``npm ci`` of ``folder``'s lockfile into ``folder/node_modules``, then its patches.

    Skipped while node_modules holds exactly this lockfile and these patches. Install scripts are
    not run (no package may download a browser or a binary); the packages are plain JavaScript.
    """
    patches = sorted((folder / "patches").glob("*.patch"))
    digest = hashlib.sha256()
    for path in [folder / "package.json", folder / "package-lock.json", *patches]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    stamp = folder / ".node_modules.sha256"
    modules = folder / "node_modules"
    if modules.is_dir() and stamp.exists() and stamp.read_text().strip() == digest.hexdigest():
        _echo(f"npm packages of {folder.relative_to(IMAGES_DIR)} are installed in {modules}")
        return modules
    if shutil.which("npm") is None:
        raise click.ClickException("npm is needed on the host to fetch the image's MCP servers "
                                   "(apt-get install -y npm)")
    stamp.unlink(missing_ok=True)
    shutil.rmtree(modules, ignore_errors=True)
    _run(["npm", "ci", "--prefix", str(folder), "--omit=dev", "--ignore-scripts", "--no-audit",
          "--no-fund", "--loglevel=warn"],
         env={**env, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1", "PUPPETEER_SKIP_DOWNLOAD": "1"})
    for patch in patches:
        _run(["patch", "-p1", "--forward", "-d", str(folder), "-i", str(patch)])
    stamp.write_text(digest.hexdigest() + "\n")
    return modules


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


def image_capabilities(tag: str) -> list[str]:
    """The capabilities the fleet gives a sandbox of this image (backends.capabilities)."""
    labels = subprocess.run(["docker", "image", "inspect", "-f", "{{json .Config.Labels}}", tag],
                            capture_output=True, text=True)
    return capabilities.for_image(json.loads(labels.stdout or "null"))


def check_image(tag: str, tool_group: str | None = None) -> None:
    """Start ``tag`` on a loopback port as the fleet would, wait for ``/fastapi/healthz``, run
    ``echo``, list the MCP tools when ``tool_group`` is given, and remove the container."""
    token = secrets.token_hex(16)
    _echo(f"checking {tag}: healthz and an echo through the shell tool"
          + (f", and the {tool_group!r} MCP tools" if tool_group else ""))
    argv = ["docker", "run", "-d", "--rm", "-p", "127.0.0.1::80", "-e", f"SECRET_TOKEN={token}",
            "--security-opt", "no-new-privileges", "--pids-limit", "512"]
    argv += ["--cap-drop", "ALL", *(f"--cap-add={c}" for c in image_capabilities(tag))]
    started = subprocess.run([*argv, tag], capture_output=True, text=True)
    if started.returncode != 0:
        raise click.ClickException(f"cannot start {tag}: {started.stderr.strip()}")
    container = started.stdout.strip()
    try:
        port = subprocess.run(["docker", "port", container, "80/tcp"], capture_output=True, text=True,
                              check=True).stdout.split()[0].rsplit(":", 1)[1]
        base = f"http://127.0.0.1:{port}/fastapi"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if not polling.poll(lambda: polling.http_ok(f"{base}/healthz", headers, body=b"OK"),
                            CHECK_TIMEOUT, most=0.2):
            logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True)
            raise click.ClickException(f"{tag} did not answer healthz within {CHECK_TIMEOUT:.0f}s:\n"
                                       f"{logs.stdout}{logs.stderr}")
        request = urllib.request.Request(f"{base}/tools/run_shell_command", headers=headers,
                                         data=json.dumps({"command": "echo sandbox-ok"}).encode())
        with urllib.request.urlopen(request, timeout=30) as response:
            result = json.loads(response.read())
        if result["content"][0]["text"] != "sandbox-ok\n":
            raise click.ClickException(f"unexpected echo result from {tag}: {result}")
        if tool_group:
            request = urllib.request.Request(f"{base}/mcp/list_tools", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=CHECK_TIMEOUT) as response:
                    tools = json.loads(response.read()).get(tool_group) or {}
            except urllib.error.HTTPError as exc:
                raise click.ClickException(f"{tag}: list_tools answered {exc.code}: "
                                           f"{exc.read().decode(errors='replace')}") from None
            # Some tools take no argument; all of them empty is the zod 4 failure (wire-contract §3).
            if not any(t["json_schema"]["function"]["parameters"]["properties"] for t in tools.values()):
                raise click.ClickException(f"{tag}: MCP group {tool_group!r} lists {sorted(tools)}, "
                                           "all with empty schemas")
            _echo(f"{tag}: {len(tools)} tools in {tool_group!r}")
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
    _echo(f"{tag} answers")


def custom_image(build_type: str, settings: Settings) -> str:
    """A custom type's image: the one its extension registered (as upstream's builder), else the
    type's name under the configured registry, namespace and tag."""
    if build_type in BUILTIN_TYPES:
        return image_uri(build_type, settings)
    try:
        return get_spec(settings, build_type).image
    except SandboxError:
        return image_uri(build_type, settings)


def build_builtin(spec: ImageSpec, settings: Settings, env: Mapping[str, str],
                  build_args: dict[str, str], check: bool, no_cache: bool) -> str:
    tag = image_uri(spec.name, settings)
    started = time.monotonic()
    args = dict(build_args)
    if spec.parent:  # a derived type builds FROM its parent as built here, whatever BASE_IMAGE says
        args["BASE_IMAGE"] = image_uri(spec.parent, settings)
    if spec.needs_rootfs and "BASE_IMAGE" not in args:
        ensure_rootfs(env)
    if spec.requirements is not None:
        fetch_wheels(spec.requirements)
    if spec.debs:
        fetch_debs(spec, args["BASE_IMAGE"], env)
    if spec.npm is not None:
        npm_install(spec.npm, env)
    docker_build(tag, spec.dockerfile, spec.context, args, env, no_cache)
    if check:
        check_image(tag, spec.tool_group)
    _echo(f"{tag} built in {time.monotonic() - started:.0f} s")
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
    env = os.environ  # handed to docker, npm and the scripts as their environment
    try:
        settings = load_settings()
        load_extensions(settings, extension)
    except SandboxError as exc:
        raise click.ClickException(exc.detail) from None
    build_args = _parse_build_args(build_arg)
    if dockerfile_path is not None:
        if build_type == "all":
            raise click.UsageError("--dockerfile_path builds one image: give its name, not 'all'")
        tag = custom_image(build_type, settings)
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
        click.echo(build_builtin(spec, settings, env, build_args, not no_check, no_cache))


if __name__ == "__main__":
    main()
