"""What `scontrol show job -o` says about a job, parsed: state, exit code, restarts, output files."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
    }
)


@dataclass(frozen=True)
class JobInfo:
    """One job as ``scontrol show job -o`` describes it."""

    job_id: str
    state: str
    """JobState: PENDING, RUNNING, COMPLETING, REQUEUED, COMPLETED, FAILED, CANCELLED, TIMEOUT, ..."""
    exit_code: int
    """The batch script's exit status (first half of ExitCode=status:signal)."""
    exit_signal: int
    """The signal that ended the batch script, 0 if none (second half of ExitCode)."""
    restarts: int
    """Restarts=N: how many times the job was requeued."""
    reason: str
    stdout: str | None
    stderr: str | None
    fields: Mapping[str, str] = field(repr=False)
    """Every Key=Value of the scontrol line."""

    @property
    def name(self) -> str:
        return self.fields.get("JobName", "")

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def output(self) -> str:
        """The job's stdout file (empty string if not there yet)."""
        return read_text(self.stdout)


_KEY = re.compile(r"(?:^|\s)([A-Za-z][\w/:.\-]*)=")


def parse_scontrol_line(line: str) -> dict[str, str]:
    """Key=Value pairs of one ``scontrol show ... -o`` line; a value runs until the next `` Key=``."""
    line = line.strip()
    matches = list(_KEY.finditer(line))
    fields: dict[str, str] = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        fields.setdefault(match.group(1), line[match.end() : end].strip())
    return fields


def job_info(fields: Mapping[str, str]) -> JobInfo:
    status, _, sig = fields.get("ExitCode", "0:0").partition(":")
    return JobInfo(
        job_id=fields.get("JobId", ""),
        state=fields.get("JobState", "UNKNOWN").split()[0] if fields.get("JobState") else "UNKNOWN",
        exit_code=int(status or 0),
        exit_signal=int(sig or 0),
        restarts=int(fields.get("Restarts", "0") or 0),
        reason=fields.get("Reason", ""),
        stdout=fields.get("StdOut") or None,
        stderr=fields.get("StdErr") or None,
        fields=dict(fields),
    )


def read_text(path: str | os.PathLike | None) -> str:
    if not path:
        return ""
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def tail_text(path: str | os.PathLike | None, lines: int) -> str:
    text = read_text(path)
    return "\n".join(text.splitlines()[-lines:]) if text else "(empty or missing)"
