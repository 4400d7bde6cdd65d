"""The cloud backends' pure parts (no Docker, no fake service): names within the services' limits,
the labels a description carries, instance sizes, URLs, and the fakes' signature check itself."""

from __future__ import annotations

import hashlib
import re

import pytest

from backends import cloud
from backends.base import LABEL_FLEET, LABEL_HOST, LABEL_NAME, LABEL_SESSION, ContainerSpec
from sandbox_core.errors import BackendError, BadRequest, SettingsError


@pytest.mark.parametrize("sandbox", [
    "runtime_sandbox_container_" + "0123456789abcdef" * 2, "Runtime_Sandbox_X", "___", "x" * 300,
    "sftest_ab12cd_shared"])
def test_resource_names_fit_the_services_and_stay_apart(sandbox):
    name = cloud.resource_name("agentscope-sandbox", "runtime_sandbox_container_", sandbox)
    assert len(name) <= cloud.NAME_LIMIT and re.fullmatch(r"agentscope-sandbox-[a-z0-9-]+", name)
    assert re.fullmatch(r"[a-zA-Z][a-zA-Z0-9_-]{0,63}", name)  # FC's rule for function names
    assert cloud.is_resource_name("agentscope-sandbox", name)
    assert name == cloud.resource_name("agentscope-sandbox", "runtime_sandbox_container_", sandbox)
    assert name != cloud.resource_name("agentscope-sandbox", "runtime_sandbox_container_",
                                       sandbox.swapcase()) or sandbox.swapcase() == sandbox


@pytest.mark.parametrize("prefix", ["", "9abc", "a_b", "x" * 31, "ends-"])
def test_bad_prefixes_stop_start_up(prefix):
    with pytest.raises(SettingsError, match="FC_PREFIX"):
        cloud.check_prefix("FC_PREFIX", prefix)


def test_the_description_carries_the_labels_and_the_port_and_drops_what_does_not_fit():
    labels = {LABEL_FLEET: "runtime_sandbox_container_", LABEL_HOST: "host-1",
              LABEL_NAME: "runtime_sandbox_container_" + "a" * 32, LABEL_SESSION: "s" * 36,
              "io.sandbox-fleet.secret": "never-there"}
    spec = ContainerSpec(name=labels[LABEL_NAME], image="i", host_port=50123, environment={},
                         labels=labels)
    text = cloud.description(spec)
    assert len(text) <= cloud.DESCRIPTION_LIMIT and "never-there" not in text
    carried, port = cloud.read_description(text)
    assert port == 50123 and carried == {k: v for k, v in labels.items() if "secret" not in k}
    spec.labels[LABEL_SESSION] = "s" * 200  # too long: left out, the rest kept
    carried, _ = cloud.read_description(cloud.description(spec))
    assert LABEL_SESSION not in carried and carried[LABEL_NAME] == labels[LABEL_NAME]
    spec.labels[LABEL_HOST] = "h" * 300
    with pytest.raises(BadRequest, match="too long"):
        cloud.description(spec)
    assert cloud.read_description("a description a person wrote") is None


@pytest.mark.parametrize(("memory", "cpus", "expected"), [
    ("1g", 1.0, (1024, 1.0)), ("256m", 1.5, (1536, 1.5)), (None, None, (2048, 2.0)),
    ("100m", 0.01, (128, 0.05)), ("16g", 1.0, (16384, 4.0)), ("1000m", 0.33, (1024, 0.35))])
def test_instance_sizes_follow_the_services_steps_and_ratios(memory, cpus, expected):
    mb, cpu = cloud.instance_size(memory, cpus, 2048, 2.0)
    assert (mb, cpu) == expected
    assert mb % 64 == 0 and round(cpu * 100) % 5 == 0 and cpu <= mb / 1024 <= cpu * 4


@pytest.mark.parametrize("url", ["https://x.fcapp.run", "http://127.0.0.1:8080/a/b/invocations/",
                                 "https://1.agentrun-data.cn-hangzhou.aliyuncs.com:8443/p"])
def test_the_agent_url_is_kept_as_the_service_gave_it(url):
    assert cloud.agent_url(url, "it") == url.rstrip("/")


@pytest.mark.parametrize("url", [None, "", "ftp://x", "x.fcapp.run", "/path"])
def test_a_missing_or_odd_url_is_a_backend_error(url):
    with pytest.raises(BackendError, match="no usable URL"):
        cloud.agent_url(url, "it")


def test_the_fakes_check_signatures_for_real():
    """A request the SDK signed passes; changing its body, path, a signed header or the secret
    does not; a nonce cannot be used twice."""
    from alibabacloud_tea_openapi.utils import Utils
    from darabonba.request import DaraRequest

    from tests.doubles.acs3 import SignatureVerifier

    body = b'{"functionName": "f"}'
    request = DaraRequest()
    request.method, request.pathname, request.query = "POST", "/2023-03-30/functions", {"a": "b c~"}
    request.headers = {"host": "127.0.0.1:1", "x-acs-action": "CreateFunction",
                       "x-acs-version": "2023-03-30", "x-acs-date": Utils.get_timestamp(),
                       "x-acs-signature-nonce": Utils.get_nonce(),
                       "x-acs-content-sha256": hashlib.sha256(body).hexdigest()}
    request.headers["Authorization"] = Utils.get_authorization(
        request, "ACS3-HMAC-SHA256", request.headers["x-acs-content-sha256"], "AK", "SK")
    headers = {k.lower(): [v] for k, v in request.headers.items()}
    path = "/2023-03-30/functions?a=b%20c~"

    def check(keys=None, method="POST", raw=path, sent=None, data=body):
        return SignatureVerifier(keys or {"AK": "SK"}).check(method, raw, sent or headers, data)

    assert check() is None
    assert check(keys={"AK": "other"}).code == "SignatureNotMatch"
    assert check(keys={"AK2": "SK"}).code == "InvalidAccessKeyId.NotFound"
    assert check(raw="/2023-03-30/functions?a=d").code == "SignatureNotMatch"
    assert check(method="PUT").code == "SignatureNotMatch"
    assert check(data=b"{}").code == "ContentSHA256NotMatch"
    assert check(sent={**headers, "x-acs-action": ["DeleteFunction"]}).code == "SignatureNotMatch"
    verifier = SignatureVerifier({"AK": "SK"})
    assert verifier.check("POST", path, headers, body) is None
    assert verifier.check("POST", path, headers, body).code == "SignatureNonceUsed"
