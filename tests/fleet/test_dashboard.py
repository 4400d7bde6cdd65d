"""/dashboard on a fleet of two worker hosts, read in headless Chromium (Debian's ``chromium``).

Chromium is kept on this machine: every host name but 127.0.0.1 resolves to nothing and its
background services (updates, sync, safe browsing...) are off, so it sends nothing elsewhere.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REPO = Path(__file__).resolve().parents[2]


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={profile}", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-default-apps",
         "--disable-domain-reliability", "--disable-client-side-phishing-detection",
         "--disable-features=OptimizationHints,MediaRouter,Translate",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--hide-scrollbars",
         *args], capture_output=True, text=True, timeout=120, check=True)


def test_dashboard_shows_two_hosts_in_a_browser(make_fleet, redis_url, raw_redis, tmp_path):
    raw_redis.flushdb()
    fleet = make_fleet(POOL_SIZE=1, REDIS_ENABLED="true", REDIS_URL=redis_url)
    end = int(fleet.values["PORT_RANGE"].strip("[]").split(",")[1])
    other = fleet.add_host(f"{fleet.values['FLEET_HOST_NAME']}-b", (end + 1000, end + 1100))
    try:
        # A session's sandboxes on both hosts: creates go to whichever host is free, so keep
        # creating (few) until each host holds one.
        session = "dashboard-session"
        names, hosts = [], set()
        while len(hosts) < 2 and len(names) < 8:
            names.append(fleet.data("create", {"sandbox_type": "base",
                                               "meta": {"session_ctx_id": session}}, allow_null=False))
            hosts.add(fleet.data("get_info", {"identity": names[-1]})["host"])
        assert hosts == {fleet.values["FLEET_HOST_NAME"], other.name}
        # A create Docker refuses (an environment variable without a name): a recent failure.
        refused = fleet.post("create", {"sandbox_type": "base", "environment": {"": "x"}}).json()
        assert refused["data"] is None
        # Workers write their failures to the store once a second (sandbox_core.metrics).
        fleet.wait_for(lambda: "invalid environment variable" in fleet.get("dashboard").text,
                       what="the refused create among the recent failures")
        fleet.wait_for(lambda: fleet.get("fleet/status").json()["pools"]["base"]["warm"] == 1,
                       what="the warm pool sandbox")

        # The token: the header works; a browser's ?token= becomes an HttpOnly cookie.
        url = f"{fleet.url}/dashboard"
        assert requests.get(url, timeout=30).status_code == 401
        assert requests.get(url, params={"token": "wrong"}, timeout=30).status_code == 401
        assert fleet.get("dashboard").status_code == 200
        answer = requests.get(url, params={"token": fleet.token}, allow_redirects=False, timeout=30)
        assert answer.status_code == 303 and answer.headers["Location"].endswith("/dashboard")
        cookie = answer.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard" in cookie

        profile = tmp_path / "chromium-profile"
        dom = chromium(profile, "--dump-dom", f"{url}?token={fleet.token}").stdout
        for text in (*names, *hosts, session, "Recent failures", "invalid environment variable",
                     "(pool)", "calls, lifecycle"):
            assert text in dom, text
        assert fleet.token not in dom

        # The cookie the first visit set is enough now: a screenshot of plain /dashboard.
        shot = tmp_path / "dashboard.png"
        chromium(profile, f"--screenshot={shot}", "--window-size=1400,1000", url)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
        if os.environ.get("SANDBOX_FLEET_DOCS_SCREENSHOT"):  # refresh the docs' picture
            shutil.copy(shot, REPO / "docs" / "img" / "dashboard.png")
        for name in names:
            fleet.data("release", {"identity": name})
    finally:
        other.stop()
