"""A built wheel, installed (not editable) in a fresh virtual environment, works from outside the checkout.

Through the console scripts only: train 3 mock steps, preprocess a JSONL, export to Hugging Face, evaluate registered tasks.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.slow


def _env(venv: str) -> dict:
    """No PYTHONPATH (it points at the checkout in development): only what the wheel installed can be imported."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PATH=os.path.join(venv, "bin") + os.pathsep + env.get("PATH", ""), PYTHONNOUSERSITE="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1", OMP_NUM_THREADS="1")
    return env


def _run(command: list, cwd: str, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def _site_packages(venv: str) -> str:
    return sysconfig.get_paths(vars={"base": venv, "platbase": venv})["purelib"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv, a working directory outside the checkout, env): the wheel of this working tree, installed in the venv."""
    root = tmp_path_factory.mktemp("wheel")
    # Build from a copy, so no build/ or egg-info lands in the checkout and no stale build/lib leaks in.
    source = root / "source"
    source.mkdir()
    shutil.copy(os.path.join(REPO, "setup.py"), source)
    shutil.copytree(os.path.join(REPO, "megatron_sota"), source / "megatron_sota",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv, work = str(root / "venv"), str(root / "work")
    os.mkdir(work)
    env = _env(venv)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"),
          str(source)], work, env)
    # The system site-packages provide torch, megatron-core and the rest: nothing is downloaded.
    _run([sys.executable, "-m", "venv", "--system-site-packages", venv], work, env)
    if sys.prefix != sys.base_prefix:  # pytest runs in a venv itself: its packages are not the "system" ones
        with open(os.path.join(_site_packages(venv), "outer_venv.pth"), "w") as handle:
            handle.write("\n".join(site.getsitepackages()) + "\n")
    wheels = glob.glob(str(root / "dist" / "megatron_sota-*.whl"))
    assert len(wheels) == 1, wheels
    _run([os.path.join(venv, "bin", "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
          "--ignore-installed", wheels[0]], work, env)
    return venv, work, env


def test_the_package_and_its_configs_load_from_the_venv_not_the_checkout(installed):
    venv, work, env = installed
    probe = ("import json, megatron_sota; from megatron_sota.config.files import conf_dir; "
             "print(json.dumps([megatron_sota.__file__, conf_dir()]))")
    package, conf = json.loads(_run([os.path.join(venv, "bin", "python"), "-c", probe], work, env).stdout)
    installed_at = os.path.join(_site_packages(venv), "megatron_sota")
    assert package == os.path.join(installed_at, "__init__.py")
    assert conf == os.path.join(installed_at, "conf")
    shipped = {os.path.relpath(p, conf) for p in glob.glob(os.path.join(conf, "**", "*"), recursive=True) if os.path.isfile(p)}
    checkout_conf = os.path.join(REPO, "megatron_sota", "conf")
    expected = {os.path.relpath(p, checkout_conf) for p in glob.glob(os.path.join(checkout_conf, "**", "*"), recursive=True)
                if os.path.isfile(p) and "__pycache__" not in p}
    assert shipped == expected


def test_console_scripts_preprocess_train_export_and_evaluate_outside_the_checkout(installed):
    venv, work, env = installed
    bin_dir = os.path.join(venv, "bin")

    def run(script: str, *args: str) -> subprocess.CompletedProcess:
        return _run([os.path.join(bin_dir, script), *args], work, env)

    run("megatron-sota-build-stdlib-corpus", "--output", "corpus.jsonl", "--max-files", "40")
    run("megatron-sota-train-tokenizer", "--input", "corpus.jsonl", "--model-prefix", "tok", "--vocab-size", "600",
        "--quiet")
    result = run("megatron-sota-preprocess", "--input", "corpus.jsonl", "--output-prefix", "corpus",
                 "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", "tok.model", "--append-eod",
                 "--workers", "1", "--no-progress")
    assert "documents: 40" in result.stdout
    assert os.path.getsize(os.path.join(work, "corpus_text_document.bin")) > 0

    run("megatron-sota-train", "model=tiny", "data.mock=true", "train.iters=3", "runtime.device=cpu",
        "train.seq_length=64", "train.micro_batch_size=2", "train.global_batch_size=2", "train.eval_interval=0",
        "logging.interval=1", "tokenizer=sentencepiece", f"tokenizer.model={os.path.join(work, 'tok.model')}",
        "hydra.run.dir=run")
    rows = [json.loads(line) for line in open(os.path.join(work, "run", "metrics.jsonl"))]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]

    run("megatron-sota-convert", "export", "--load", "run/checkpoints", "--save", "hf", "--dtype", "fp32", "--no-progress")
    with open(os.path.join(work, "hf", "config.json")) as handle:
        assert json.load(handle)["vocab_size"] == 600
    assert glob.glob(os.path.join(work, "hf", "*.safetensors"))

    # Registered tasks: their YAML files and their JSONL data are package data of the wheel.
    run("megatron-sota-evaluate", "--load", "run/checkpoints", "--task", "arithmetic_mc", "--task", "python_docs_ppl",
        "--limit", "4", "--no-progress", "--output", "report.json")
    with open(os.path.join(work, "report.json")) as handle:
        report = json.load(handle)
    assert {r["task"] for r in report["results"]} == {"arithmetic_mc", "python_docs_ppl"}
