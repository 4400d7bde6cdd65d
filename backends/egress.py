"""Where a sandbox may connect off its host: the iptables rules of the fleet's bridges.

``egress="open"`` (the default) is the public internet only: a chain on Docker's DOCKER-USER hook
rejects what a sandbox sends to private, shared (CGNAT), link-local (the cloud metadata address
169.254.169.254) and the other non-public ranges, except the networks its type allows
(``egress_allow``) and port 53 of the host's resolvers. That exception keeps DNS working: Docker's
embedded DNS (127.0.0.11 in the sandbox) forwards a query from the sandbox's own network namespace,
so the query crosses the bridge like any other packet, and a host's resolver is often private
(10.x, or 169.254.169.253 on AWS). ``"lan"`` forwards every address, ``"none"`` none.
"""

from __future__ import annotations

import ipaddress
import logging
import subprocess

log = logging.getLogger(__name__)

#: IPv4 ranges that are not the public internet (IANA's special-purpose registry).
NON_PUBLIC = (
    "0.0.0.0/8",        # "this network"
    "10.0.0.0/8",       # private
    "100.64.0.0/10",    # shared address space (CGNAT), also some clouds' internal services
    "127.0.0.0/8",      # loopback (never forwarded, listed for completeness)
    "169.254.0.0/16",   # link-local: the cloud metadata service 169.254.169.254
    "172.16.0.0/12",    # private
    "192.0.0.0/24",     # IETF protocol assignments
    "192.0.2.0/24",     # TEST-NET-1
    "192.88.99.0/24",   # former 6to4 relays
    "192.168.0.0/16",   # private
    "198.18.0.0/15",    # benchmarking
    "198.51.100.0/24",  # TEST-NET-2
    "203.0.113.0/24",   # TEST-NET-3
    "224.0.0.0/4",      # multicast
    "240.0.0.0/4",      # reserved, and the broadcast address
)
RESOLV_CONFS = ("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf")
REJECT = ["-j", "REJECT", "--reject-with", "icmp-admin-prohibited"]


def chain_name(bridge: str) -> str:
    return f"SFE-{bridge}"  # at most 19 characters; iptables allows 28


def host_resolvers(paths: tuple[str, ...] = RESOLV_CONFS) -> list[str]:
    """The IPv4 nameservers Docker's embedded DNS forwards to: the host's resolv.conf's, or
    systemd-resolved's upstream ones when the host's is only a loopback stub (as Docker does)."""
    for path in paths:
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        servers = []
        for line in lines:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                try:
                    address = ipaddress.IPv4Address(parts[1])
                except ValueError:
                    continue  # IPv6: the fleet's bridges have no IPv6
                if not address.is_loopback:
                    servers.append(str(address))
        if servers:
            return servers
    return []


def chain_rules(chain: str, allow: tuple[str, ...], resolvers: list[str]) -> list[list[str]]:
    """The public-only chain: resolvers' port 53 and the allowed networks return (go on to
    Docker's own rules), the other non-public ranges are rejected, everything else returns."""
    rules = []
    for server in resolvers:
        for proto in ("udp", "tcp"):
            rules.append(["-A", chain, "-d", f"{server}/32", "-p", proto, "--dport", "53",
                          "-j", "RETURN"])
    rules += [["-A", chain, "-d", cidr, "-j", "RETURN"] for cidr in allow]
    rules += [["-A", chain, "-d", cidr, *REJECT] for cidr in NON_PUBLIC]
    return rules


def install_chain(bridge: str, allow: tuple[str, ...]) -> bool:
    """Write the bridge's chain in one ``iptables-restore`` transaction (so workers doing it at
    the same moment each leave the same, whole chain) and jump to it from DOCKER-USER."""
    chain = chain_name(bridge)
    resolvers = host_resolvers()
    lines = ["*filter", f":{chain} - [0:0]"]  # with --noflush, declaring a chain empties it
    lines += [" ".join(rule) for rule in chain_rules(chain, allow, resolvers)]
    lines.append("COMMIT")
    try:
        subprocess.run(["iptables-restore", "--noflush"], input="\n".join(lines) + "\n",
                       capture_output=True, text=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("iptables-restore of %s failed: %s", chain, getattr(e, "stderr", "") or e)
        return False
    log.info("egress of %s: public internet%s%s", bridge,
             f" and {', '.join(allow)}" if allow else "",
             f"; DNS to {', '.join(resolvers)}" if resolvers else "")
    return iptables(jump_rule(bridge))


def remove_chain(bridge: str) -> None:
    iptables(jump_rule(bridge), remove=True)
    chain = chain_name(bridge)
    for args in (["-F", chain], ["-X", chain]):
        subprocess.run(["iptables", *args], capture_output=True, timeout=30)


def jump_rule(bridge: str) -> list[str]:
    return ["DOCKER-USER", "-i", bridge, "-j", chain_name(bridge)]


def host_guard(bridge: str) -> list[str]:
    """Drop new connections from a sandbox bridge to the host itself. One rule, so workers adding
    it at the same moment cannot get an order wrong; replies to the host's own connections (a
    worker calling an agent at its bridge address, or the published ports' proxy) are not new
    and pass."""
    return ["INPUT", "-i", bridge, "-m", "conntrack", "--ctstate", "NEW,INVALID", "-j", "DROP"]


def inbound_guard(bridge: str) -> list[str]:
    """Drop new connections forwarded into a sandbox bridge (from the LAN, when a machine routes
    the bridge's subnet through this host), whatever the host's FORWARD policy: only this host
    calls the agents, and its own connections are not forwarded."""
    return ["DOCKER-USER", "-o", bridge, "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"]


def block_all(bridge: str) -> list[str]:
    """Drop everything a sandbox bridge would have forwarded off the host (Docker's chain for
    user rules, evaluated before its own accept rules)."""
    return ["DOCKER-USER", "-i", bridge, "-j", "DROP"]


def iptables(rule: list[str], remove: bool = False) -> bool:
    """Add (or remove every copy of) a rule, idempotently; False if iptables refused."""
    try:
        if remove:
            while subprocess.run(["iptables", "-D", *rule], capture_output=True,
                                 timeout=30).returncode == 0:
                pass  # a race may have added it twice
        elif subprocess.run(["iptables", "-C", *rule], capture_output=True, timeout=30).returncode:
            subprocess.run(["iptables", "-I", *rule], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("iptables %s %s failed: %s", "-D" if remove else "-I", " ".join(rule), e)
        return False
    return True
