"""The version check in front of every patch of upstream internals (runtime/upstream.py) and what each site does with it."""

from __future__ import annotations

import ast
import logging
import pathlib

import pytest
import torch

from megatron_sota.errors import MegatronSotaError
from megatron_sota.runtime import upstream

REPO = pathlib.Path(__file__).resolve().parents[2]
INSTALLED = upstream.installed_version


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(upstream, "_warned", set())


@pytest.fixture
def warnings_logged():
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger(upstream.__name__)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@pytest.fixture
def megatron_core_019(monkeypatch):
    """The installed versions as after an upgrade of megatron-core only."""
    monkeypatch.setattr(upstream, "installed_version", lambda d: "0.19.0" if d == "megatron-core" else INSTALLED(d))


def test_release_matches_the_written_release_and_its_patch_releases():
    assert upstream.release_matches("2.13.0+cpu", "2.13")
    assert upstream.release_matches("2.13.2+cu130", "2.13")
    assert upstream.release_matches("0.16.1", "0.16.1")
    assert upstream.release_matches("0.16.1rc2", "0.16.1")
    assert not upstream.release_matches("2.14.0", "2.13")
    assert not upstream.release_matches("0.16.10", "0.16.1")
    assert not upstream.release_matches("0.19.0", "0.16.1")
    assert not upstream.release_matches("unknown", "0.16.1")


def test_every_patch_names_its_upstream_test_and_its_targets_exist():
    module = ast.parse((REPO / upstream.TESTS).read_text(encoding="utf-8"))
    tests = {node.name for node in module.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}
    assert [patch.test for patch in upstream.PATCHES if patch.test not in tests] == []
    assert [path for patch in upstream.PATCHES for path in patch.targets if not upstream.resolves(path)] == []
    assert len({patch.name for patch in upstream.PATCHES}) == len(upstream.PATCHES) == 10


def test_installed_versions_apply_every_patch_silently(warnings_logged):
    for patch in upstream.PATCHES:
        if upstream.version_differences(patch):
            pytest.skip(f"installed versions differ from those of {patch.name}: {upstream.version_differences(patch)}")
    assert all(upstream.applies(patch) for patch in upstream.PATCHES)
    assert warnings_logged == []


def test_another_version_warns_once_naming_the_patch_and_skips_copies_of_upstream_code(
    megatron_core_019, warnings_logged
):
    assert upstream.applies(upstream.FULLY_RESHARDABLE_STEP)  # APPLY: harmless on changed code
    assert not upstream.applies(upstream.TP_GROUP_WITHOUT_WARNING)  # SKIP: repeats upstream's lookup
    assert not upstream.applies(upstream.TP_GROUP_WITHOUT_WARNING)
    assert upstream.applies(upstream.LOADER_WORKERS_AT_EXIT)  # torch only: unaffected
    messages = [record.getMessage() for record in warnings_logged]
    assert len(messages) == 2
    assert "install_fully_reshardable_step_fix" in messages[0] and "applied anyway" in messages[0]
    skipped = messages[1]
    assert "model.compile_layers._default_tp_group_without_warning" in skipped
    assert "megatron-core 0.19.0 (written for 0.16.1)" in skipped and "left out" in skipped
    assert f"{upstream.TESTS}::{upstream.TP_GROUP_WITHOUT_WARNING.test}" in skipped


def test_a_gone_target_leaves_the_patch_out_or_refuses_where_needed(warnings_logged):
    gone = "torch.utils.data.dataloader._NoSuchIter._shutdown_workers"
    optional = upstream.Patch("probe.optional", (("torch", "2.13"),), upstream.APPLY, "test_x", (gone,))
    assert not upstream.applies(optional)
    assert gone in warnings_logged[0].getMessage()
    needed = upstream.Patch("probe.needed", (("torch", "2.13"),), upstream.APPLY, "test_x", (gone,), "data.num_workers=0")
    with pytest.raises(MegatronSotaError, match=r"probe\.needed: expected upstream to have .*_NoSuchIter.* set data\.num_workers=0"):
        upstream.applies(needed)


def test_loader_refuses_workers_before_starting_them_when_torch_lost_shutdown_workers(monkeypatch):
    from megatron_sota.data.blend import build_loader

    started = []
    monkeypatch.setattr(torch.utils.data.dataloader.DataLoader, "_get_iterator", lambda self: started.append(1) or iter(()))
    monkeypatch.delattr(torch.utils.data.dataloader._MultiProcessingDataLoaderIter, "_shutdown_workers")
    with pytest.raises(MegatronSotaError, match=r"_shutdown_workers.*set data\.num_workers=0"):
        build_loader(list(range(8)), 0, 2, 0, 1, num_workers=1)
    assert started == []
    build_loader(list(range(8)), 0, 2, 0, 1, num_workers=0)  # no workers, nothing to stop at exit
    assert started == [1]


def test_compile_substitute_is_registered_only_for_the_megatron_core_it_copies(monkeypatch, megatron_core_019):
    import megatron.core.utils as mcore_utils

    from megatron_sota.model import compile_layers

    registered = []
    monkeypatch.setattr(torch.compiler, "substitute_in_graph", lambda original: registered.append(original) or (lambda f: f))
    monkeypatch.setattr(compile_layers, "_substituted", False)
    compile_layers._trace_default_tp_group_without_warning()
    assert registered == []
    monkeypatch.setattr(upstream, "installed_version", INSTALLED)
    compile_layers._trace_default_tp_group_without_warning()
    compile_layers._trace_default_tp_group_without_warning()
    assert registered == [mcore_utils.get_tensor_model_parallel_group_if_none]
