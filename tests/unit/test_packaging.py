"""What an install ships: every conf file as package data, one console script per user tool (tools/ only wraps
them), and a Dockerfile that installs every runtime requirement of setup.py but torch (the NGC image's own)."""

from __future__ import annotations

import ast
import glob
import importlib
import importlib.util
import os
import re
import shlex

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = os.path.join(REPO, "megatron_sota")

# The Megatron-style tools the README documents, and the console script each one wraps.
USER_TOOLS = {
    "preprocess_data": "megatron-sota-preprocess",
    "merge_datasets": "megatron-sota-merge-datasets",
    "inspect_data": "megatron-sota-inspect-data",
    "train_tokenizer": "megatron-sota-train-tokenizer",
    "build_stdlib_corpus": "megatron-sota-build-stdlib-corpus",
    "curate": "megatron-sota-curate",
    "convert_checkpoint": "megatron-sota-convert",
    "generate": "megatron-sota-generate",
    "evaluate": "megatron-sota-evaluate",
    "swebench_predictions": "megatron-sota-swebench-predictions",
    "release_gate": "megatron-sota-release-gate",
    "plan": "megatron-sota-plan",
    "benchmark": "megatron-sota-benchmark",
    "compare_runs": "megatron-sota-compare-runs",
    "cai": "megatron-sota-cai",
    "rl_timing": "megatron-sota-rl-timing",
    "serve": "megatron-sota-serve",
    "gateway": "megatron-sota-gateway",
    "serving_benchmark": "megatron-sota-serving-benchmark",
    "quantize": "megatron-sota-quantize",
    "export_onnx": "megatron-sota-export-onnx",
}


def setup_keywords() -> dict:
    """The literal keyword arguments of setup.py's setup(...) call, read without running setup.py."""
    tree = ast.parse(open(os.path.join(REPO, "setup.py")).read())
    call = next(node for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup")
    keywords = {}
    for keyword in call.keywords:
        try:
            keywords[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:  # names such as find_packages(...) or CURATE
            continue
    return keywords


def console_scripts() -> dict[str, str]:
    """Console script name -> 'module:function'."""
    entries = setup_keywords()["entry_points"]["console_scripts"]
    return dict(entry.replace(" ", "").split("=", 1) for entry in entries)


def resolve(target: str):  # type: ignore[no-untyped-def]
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def dockerfile_pip_installs() -> list[list[str]]:
    """The arguments of each `pip install` in the Dockerfile's RUN lines (continuations joined, comments dropped)."""
    lines = [line for line in open(os.path.join(REPO, "Dockerfile")) if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "".join(lines))
    installs = []
    for line in text.splitlines():
        if line.startswith("RUN "):
            for command in line[len("RUN "):].split("&&"):
                words = shlex.split(command)
                if words[:2] == ["pip", "install"]:
                    installs.append(words[2:])
    return installs


def requirement_names(words: list[str]) -> list[str]:
    """The requirements among pip install's arguments: not options, not an option's value, not a local path."""
    found, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word in ("-c", "--constraint", "-r", "--requirement"):
            skip = True
        elif not word.startswith("-") and not word.startswith("."):
            found.append(word)
    return found


def normalized(requirement: str) -> tuple[str, str]:
    parsed = Requirement(requirement)
    return canonicalize_name(parsed.name), str(parsed.specifier)


def test_every_conf_file_is_package_data():
    patterns = setup_keywords().get("package_data", {}).get("megatron_sota", [])
    declared = {os.path.relpath(path, PACKAGE) for p in patterns for path in glob.glob(os.path.join(PACKAGE, p), recursive=True)}
    present = {
        os.path.relpath(os.path.join(folder, name), PACKAGE)
        for folder, _, names in os.walk(os.path.join(PACKAGE, "conf"))
        for name in names
        if "__pycache__" not in folder
    }
    assert "conf/config.yaml" in present and "conf/eval/tasks/data/arithmetic_mc.jsonl" in present
    assert present - declared == set(), "files under megatron_sota/conf/ that a wheel would leave out"


def test_every_user_tool_has_a_console_script_whose_main_exists():
    scripts = console_scripts()
    assert scripts["megatron-sota-train"] == "megatron_sota.train:main"
    assert set(USER_TOOLS.values()) <= set(scripts), "a user tool without a console script"
    for name, target in scripts.items():
        assert callable(resolve(target)), name


def test_tools_are_wrappers_of_the_console_scripts_and_touch_no_import_path():
    scripts = console_scripts()
    for path in sorted(glob.glob(os.path.join(REPO, "tools", "*.py"))):
        source = open(path).read()
        assert "sys.path" not in source and "__file__" not in source, f"{path} finds code or configs through its own location"
        name = os.path.basename(path)[: -len(".py")]
        if name not in USER_TOOLS:
            continue  # a developer's benchmark script
        spec = importlib.util.spec_from_file_location(f"tools_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.main is resolve(scripts[USER_TOOLS[name]]), f"tools/{name}.py runs another command than {USER_TOOLS[name]}"
    assert {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "tools", "*.py"))} >= set(USER_TOOLS)


def test_dockerfile_installs_every_runtime_requirement_of_setup_py_but_torch():
    required = {normalized(r) for r in setup_keywords()["install_requires"]}
    torch = {r for r in required if r[0] == "torch"}
    assert torch, "setup.py no longer lists torch: update this test's documented exception"
    installs = dockerfile_pip_installs()
    in_dockerfile = [normalized(r) for words in installs for r in requirement_names(words)]
    assert len(in_dockerfile) == len(set(in_dockerfile)), "a requirement listed twice in the Dockerfile"
    assert set(in_dockerfile) == required - torch, (
        f"missing from the Dockerfile: {sorted(required - torch - set(in_dockerfile))}; "
        f"not in setup.py (or with another version range): {sorted(set(in_dockerfile) - required)}"
    )


def test_dockerfile_keeps_the_images_torch_and_installs_the_project_without_editable_mode():
    installs = dockerfile_pip_installs()
    dependencies = [words for words in installs if requirement_names(words)]
    constraints = {words[words.index("-c") + 1] for words in dependencies if "-c" in words}
    assert len(constraints) == 1 and all("-c" in words for words in dependencies), (
        "every requirement install must be constrained to the image's torch"
    )
    dockerfile = open(os.path.join(REPO, "Dockerfile")).read()
    assert re.search(r"RUN python -c .*torch==\{torch\.__version__\}.*> " + re.escape(constraints.pop()), dockerfile)
    project = [words for words in installs if "." in words]
    assert len(project) == 1 and "--no-deps" in project[0], project
    assert not {"-e", "--editable"} & set(project[0]), "the image installs the package in editable mode"
