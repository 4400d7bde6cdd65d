"""Which Linux capabilities a sandbox gets: one policy for every backend and the image builder.

Every sandbox starts with all capabilities dropped. An image built by sandbox-fleet says with a
label which ones its agent needs (ours: none); an image without the label (an upstream
agentscope-runtime image) gets a small compatible set instead of Docker's defaults.
"""

from __future__ import annotations

from collections.abc import Mapping

LABEL = "io.sandbox-fleet.capabilities"
#: Enough for upstream images (supervisord drops to nginx's user), without Docker's riskier
#: defaults (NET_RAW, MKNOD, SYS_CHROOT, AUDIT_WRITE...).
COMPAT = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID", "KILL", "NET_BIND_SERVICE")


def for_image(labels: Mapping[str, str] | None) -> list[str]:
    """The capabilities to add for an image with these labels."""
    value = (labels or {}).get(LABEL)
    if value is None:
        return list(COMPAT)
    return [c.strip() for c in value.split(",") if c.strip()]
