"""SLURM nodelists expand to every host in scontrol's order; scontrol itself is the oracle where installed."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest

from megatron_sota.errors import MegatronSotaError
from megatron_sota.runtime.slurm_nodelist import expand_nodelist, slurm_hostnames

EXPECTED = {
    "node01": ["node01"],
    "gpu[003-005,9],cpu1": ["gpu003", "gpu004", "gpu005", "gpu9", "cpu1"],
    "rack[1-2]-node[01-04]": [f"rack{r}-node0{n}" for r in (1, 2) for n in (1, 2, 3, 4)],
    "a[1,3]b[2-3]c": ["a1b2c", "a1b3c", "a3b2c", "a3b3c"],
    "x[098-101]": ["x098", "x099", "x100", "x101"],
    "n[8-11]": ["n8", "n9", "n10", "n11"],
    "n[01-3] m[5]": ["n01", "n02", "n03", "m5"],
    "b1,a1,,b1": ["b1", "a1", "b1"],
    # SLURM's hostlist.c: the last group fastest, then the first, ..., the last but one slowest
    "n[1-2]x[3-4]y[5-6]": ["n1x3y5", "n1x3y6", "n2x3y5", "n2x3y6", "n1x4y5", "n1x4y6", "n2x4y5", "n2x4y6"],
}

# Forms every SLURM release accepts (22.05 rejects text after the last bracket, as in 'a[1,3]b[2-3]c').
ORACLE_CASES = (
    "node01",
    "gpu[003-005,9],cpu1",
    "rack[1-2]-node[01-04]",
    "x[098-101],n[8-11]",
    "n[01-3],m[5] k[3,1,2]",
    "b1,a1,,b1",
    "n[1-2]x[3-4]y[5-6],z",
    "n[1-2]a[3-4]b[5-6]c[07-8]",
    "a[1-2]-[3-4]",
    "127.0.0.1",
)


@pytest.mark.parametrize("nodelist", sorted(EXPECTED))
def test_nodelist_expands_to_every_host(nodelist):
    assert expand_nodelist(nodelist) == EXPECTED[nodelist]


@pytest.mark.parametrize("nodelist", ["n[1-2", "n1-2]", "n[[1]]", "n[a-b]", "n[]", "n[10-8]", " , "])
def test_malformed_nodelist_is_refused_naming_the_variable(nodelist):
    with pytest.raises(MegatronSotaError, match="SLURM_NODELIST=.*expected"):
        expand_nodelist(nodelist, "SLURM_NODELIST")


def test_expansion_matches_scontrol_show_hostnames(tmp_path, monkeypatch):
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        pytest.skip("scontrol is not installed (apt-get install slurm-client)")
    # scontrol reads a slurm.conf even for this offline question; the smallest one it accepts will do.
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=nodelist\nSlurmctldHost=localhost\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    for nodelist in ORACLE_CASES:
        answer = subprocess.run([scontrol, "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
        assert answer.stdout.split(), f"scontrol rejected {nodelist!r}: {answer.stderr}"
        assert expand_nodelist(nodelist) == answer.stdout.split(), nodelist


def _fake_scontrol(directory, script: str, monkeypatch) -> None:
    path = directory / "scontrol"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")


def test_scontrol_answers_when_installed(tmp_path, monkeypatch):
    _fake_scontrol(tmp_path, 'test "$1 $2" = "show hostnames" && echo "from-scontrol-$3"\n', monkeypatch)
    assert slurm_hostnames("gpu[1-2]") == ["from-scontrol-gpu[1-2]"]


def test_python_expands_when_scontrol_cannot(tmp_path, monkeypatch):
    # scontrol without a slurm.conf, or on a list it rejects: a message on stderr, nothing on stdout
    _fake_scontrol(tmp_path, 'echo "scontrol: fatal: Could not establish a configuration source" >&2\n', monkeypatch)
    assert slurm_hostnames("rack[1-2]-node[01-02]") == ["rack1-node01", "rack1-node02", "rack2-node01", "rack2-node02"]
