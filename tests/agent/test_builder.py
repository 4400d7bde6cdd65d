"""runtime-sandbox-builder without Docker: image names and the command line's errors."""

from __future__ import annotations

from click.testing import CliRunner

from sandbox_cli.builder import BUILTIN, IMAGES_DIR, build_order, image_uri, main
from sandbox_core.settings import parse_settings


def test_image_uri_follows_the_shared_settings():
    assert image_uri("base", parse_settings({})) == "agentscope/runtime-sandbox-base:latest"
    settings = parse_settings({
        "RUNTIME_SANDBOX_REGISTRY": "registry.local:5000",
        "RUNTIME_SANDBOX_IMAGE_NAMESPACE": "me",
        "RUNTIME_SANDBOX_IMAGE_TAG": "v1",
    })
    assert image_uri("browser", settings) == "registry.local:5000/me/runtime-sandbox-browser:v1"


def test_builtin_images_exist_and_build_parents_first():
    for spec in BUILTIN.values():
        assert spec.dockerfile.is_file()
        assert spec.context in (IMAGES_DIR, spec.dockerfile.parent)
        if spec.npm:
            assert (spec.npm / "package-lock.json").is_file()
    assert [s.name for s in build_order(["base", "base"])] == ["base"]
    assert [s.name for s in build_order(list(BUILTIN))][0] == "base"
    assert [s.name for s in build_order(["filesystem"])] == ["base", "filesystem"]


def test_unknown_image_lists_the_known_ones():
    result = CliRunner().invoke(main, ["nope"])
    assert result.exit_code == 2
    assert f"unknown sandbox image 'nope'; known: {', '.join(BUILTIN)}, all" in result.output


def test_bad_build_arg_and_all_with_a_dockerfile(tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\n")
    result = CliRunner().invoke(
        main, ["custom", "--dockerfile_path", str(dockerfile), "--build-arg", "NOEQUALS"]
    )
    assert result.exit_code == 2
    assert "KEY=VALUE" in result.output
    result = CliRunner().invoke(main, ["all", "--dockerfile_path", str(dockerfile)])
    assert result.exit_code == 2
