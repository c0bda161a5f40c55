"""Expands a SLURM nodelist ('rack[1-2]-node[01-04],gpu9') into host names, in scontrol's order.

Asks `scontrol show hostnames` when it is installed and configured, and expands in Python otherwise;
it must not resolve, contact or rank the hosts.
"""

from __future__ import annotations

import itertools
import logging
import re
import shutil
import subprocess
from collections.abc import Iterator

from megatron_sota.errors import MegatronSotaError

logger = logging.getLogger(__name__)

_EXAMPLE = "host names and bracketed ranges such as 'gpu[003-005,9],rack[1-2]-node[01-04]'"
_RANGE = re.compile(r"(\d+)(?:-(\d+))?")

Group = list[str]
"""The values of one bracket group, zero-padded as written: '[08-10]' -> ['08', '09', '10']."""


def slurm_hostnames(nodelist: str, variable: str = "SLURM_JOB_NODELIST") -> list[str]:
    """Every host of ``nodelist``: scontrol's answer when it gives one, else ``expand_nodelist``."""
    scontrol = shutil.which("scontrol")
    if scontrol is not None:
        try:
            # scontrol exits 0 and writes nothing to stdout for a list it rejects, and it needs a
            # slurm.conf (or configless DNS records) even for this offline question.
            answer = subprocess.run(
                [scontrol, "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30, check=False
            )
            hosts = answer.stdout.split()
            if answer.returncode == 0 and hosts:
                return hosts
            logger.debug("scontrol show hostnames %r gave nothing (%s); expanding in Python", nodelist, answer.stderr.strip())
        except (OSError, subprocess.TimeoutExpired) as error:
            logger.debug("scontrol show hostnames %r failed (%s); expanding in Python", nodelist, error)
    return expand_nodelist(nodelist, variable)


def expand_nodelist(nodelist: str, variable: str = "SLURM_JOB_NODELIST") -> list[str]:
    """Every host of ``nodelist``, as `scontrol show hostnames` lists them.

    Hosts are separated by commas or spaces outside brackets; a bracket group holds comma-separated
    numbers and lo-hi ranges, zero-padded to the width of lo ('[08-10]' -> 08 09 10); a host may hold
    several groups and text between and after them. Order follows SLURM's hostlist.c: the last group
    varies fastest, then the first, the second, ... up to the last but one, which varies slowest.
    """
    patterns = [_parse_host(pattern, nodelist, variable) for pattern in _split_hosts(nodelist, variable)]
    if not patterns:
        raise MegatronSotaError(f"{variable}={nodelist!r}: expected {_EXAMPLE}; found no host")
    return [host for texts, groups in patterns for host in _hosts(texts, groups)]


def _split_hosts(nodelist: str, variable: str) -> list[str]:
    hosts, current, inside = [], [], False
    for char in nodelist:
        if char == "[":
            if inside:
                raise MegatronSotaError(f"{variable}={nodelist!r}: expected {_EXAMPLE}; found '[' inside brackets")
            inside = True
        elif char == "]":
            if not inside:
                raise MegatronSotaError(f"{variable}={nodelist!r}: expected {_EXAMPLE}; found ']' without '['")
            inside = False
        if not inside and (char == "," or char.isspace()):
            hosts.append("".join(current))
            current = []
        else:
            current.append(char)
    if inside:
        raise MegatronSotaError(f"{variable}={nodelist!r}: expected {_EXAMPLE}; found '[' without ']'")
    hosts.append("".join(current))
    return [host for host in hosts if host]


def _parse_host(pattern: str, nodelist: str, variable: str) -> tuple[list[str], list[Group]]:
    """'rack[1-2]-node[01-04]' -> texts ['rack', '-node', ''] around groups [['1', '2'], ['01', ..., '04']]."""
    pieces = re.split(r"\[([^\]]*)\]", pattern)
    return pieces[0::2], [_parse_group(body, nodelist, variable) for body in pieces[1::2]]


def _parse_group(body: str, nodelist: str, variable: str) -> Group:
    values: Group = []
    for item in body.split(","):
        match = _RANGE.fullmatch(item.strip())
        if match is None:
            raise MegatronSotaError(f"{variable}={nodelist!r}: expected {_EXAMPLE}; found [{body}]")
        lo, hi = match.group(1), match.group(2) or match.group(1)
        if int(hi) < int(lo):
            raise MegatronSotaError(f"{variable}={nodelist!r}: expected lo <= hi in a range; found {item.strip()}")
        values.extend(f"{number:0{len(lo)}d}" for number in range(int(lo), int(hi) + 1))
    return values


def _hosts(texts: list[str], groups: list[Group]) -> Iterator[str]:
    if not groups:
        yield texts[0]
        return
    last = len(groups) - 1
    slowest_first = [*range(last - 1, -1, -1), last]
    for picked in itertools.product(*(groups[i] for i in slowest_first)):
        value = dict(zip(slowest_first, picked))
        yield texts[0] + "".join(value[i] + texts[i + 1] for i in range(len(groups)))
