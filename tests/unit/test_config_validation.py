"""Config checks: impossible layouts, unknown keys and bad values fail early, naming key and value."""

from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir

from megatron_sota.config.files import conf_dir
from megatron_sota.config.job import JobConfig, register_configs
from megatron_sota.config.machine import Machine
from megatron_sota.config.typed import check_override_keys, to_job_config
from megatron_sota.config.validation import validate_job
from megatron_sota.errors import MegatronSotaError

CONF = conf_dir()
PRESETS = sorted(f[:-5] for f in os.listdir(os.path.join(CONF, "model")) if f.endswith(".yaml"))


def _job(**overrides) -> JobConfig:
    job = JobConfig()
    job.data.mock = True
    for dotted, value in overrides.items():
        group, key = dotted.split("__")
        setattr(getattr(job, group), key, value)
    return job


def _problem(world_size: int, **overrides) -> str:
    with pytest.raises(MegatronSotaError) as info:
        validate_job(_job(**overrides), world_size)
    return str(info.value)


def test_valid_layout_derives_dp_and_microbatches():
    layout = validate_job(_job(parallel__tp=2, train__global_batch_size=16, train__micro_batch_size=2), 8)
    assert (layout.dp, layout.num_microbatches) == (4, 2)


@pytest.mark.parametrize(
    "world, overrides, expected",
    [
        (2, dict(parallel__tp=2, model__num_attention_heads=5, model__num_query_groups=5),
         "model.num_attention_heads=5 is not divisible by parallel.tp=2"),
        (2, dict(parallel__tp=2, model__num_query_groups=1), "model.num_query_groups=1 is not divisible by parallel.tp=2"),
        (4, dict(parallel__pp=2, parallel__vpp=2, model__num_layers=6),
         "model.num_layers=6 is not divisible by parallel.pp*parallel.vpp = 2*2 = 4"),
        (2, dict(train__global_batch_size=6, train__micro_batch_size=2),
         "train.global_batch_size=6 is not divisible by train.micro_batch_size*dp = 2*2 = 4"),
        (2, dict(parallel__cp=2, train__seq_length=250), "train.seq_length=250 is not divisible by 2*parallel.cp = 4"),
        (1, dict(parallel__sp=True), "parallel.sp=true needs parallel.tp > 1, got tp=1"),
        (3, dict(parallel__tp=2), "world size 3 is not divisible by tp*pp*cp = 2*1*1 = 2"),
        (1, dict(parallel__vpp=2), "parallel.vpp=2 needs parallel.pp >= 2, got pp=1"),
        (2, dict(parallel__pp=2, parallel__vpp=2, train__global_batch_size=6, train__micro_batch_size=2),
         "number of micro-batches (3) to be divisible by parallel.pp=2"),
        (1, dict(train__seq_length=8192), "train.seq_length=8192 exceeds model.max_position_embeddings=4096"),
        (1, dict(train__recompute="some"), "train.recompute must be one of none, selective, full, got 'some'"),
        (1, dict(scheduler__name="linear"), "scheduler.name must be one of cosine, constant, wsd, got 'linear'"),
        (1, dict(precision__dtype="fp64"), "precision.dtype must be one of auto, fp32, bf16, fp16, got 'fp64'"),
        (1, dict(parallel__cp_comm_type="ring"), "parallel.cp_comm_type must be one of all_gather, p2p, got 'ring'"),
        (1, dict(parallel__fsdp="zero3"), "parallel.fsdp must be one of none, optim, optim_grads, optim_grads_params, got 'zero3'"),
        (4, dict(parallel__fsdp="optim_grads_params", parallel__pp=2),
         "parallel.fsdp=optim_grads_params needs parallel.pp=1, got pp=2: Megatron-FSDP (megatron-core 0.16.1)"),
        (2, dict(parallel__fsdp="optim", parallel__distributed_optimizer=False),
         "parallel.fsdp=optim shards the optimizer itself"),

        (1, dict(data__mock=False), "data.paths is empty"),
        (1, dict(data__paths=["a", "b"], data__weights=[1.0], data__mock=False),
         "data.weights has 1 entries but data.paths has 2"),
        (1, dict(tokenizer__type="SentencePieceTokenizer"), "tokenizer.type=SentencePieceTokenizer needs tokenizer.model"),
        (1, dict(model__rope_scaling_factor=0.0), "model.rope_scaling_factor must be > 0 or null, got 0.0"),
        (1, dict(checkpoint__export_hf_dtype="fp16"), "checkpoint.export_hf_dtype must be one of bf16, fp32, got 'fp16'"),
        (1, dict(checkpoint__export_hf_every=5, tokenizer__type="TikTokenizer"),
         "checkpoint.export_hf_every needs a tokenizer that can be written as Hugging Face files"),
        (1, dict(generation__top_p=1.5), "generation.top_p must be in (0, 1], got 1.5"),
        (1, dict(generation__temperature=-0.1), "generation.temperature must be >= 0, got -0.1"),
        (1, dict(eval__interval=-1), "eval.interval must be >= 0, got -1"),
        (1, dict(precision__fp8="e5m2"), "precision.fp8 must be one of null, e4m3, hybrid, got 'e5m2'"),
    ],
)
def test_impossible_config_is_rejected_with_a_message_naming_key_and_values(world, overrides, expected):
    assert expected in _problem(world, **overrides)


def test_all_problems_are_reported_at_once():
    message = _problem(3, parallel__tp=2, parallel__sp=False, model__num_query_groups=1)
    assert "world size 3" in message and "num_query_groups=1" in message


CPU_ONLY = Machine(cuda=False, transformer_engine=False)
# Every number of the config outside its range: (a value just outside, the range the message states).
OUT_OF_RANGE = {
    "parallel.tp": (0, ">= 1"), "parallel.pp": (-1, ">= 1"), "parallel.cp": (0, ">= 1"), "parallel.vpp": (0, ">= 1 or null"),
    "model.num_layers": (0, ">= 1"), "model.hidden_size": (-8, ">= 1"), "model.ffn_hidden_size": (0, ">= 1"),
    "model.num_attention_heads": (0, ">= 1"), "model.num_query_groups": (0, ">= 1"),
    "model.max_position_embeddings": (0, ">= 1"), "model.kv_channels": (0, ">= 1 or null"), "model.vocab_size": (1, ">= 2"),
    "model.make_vocab_size_divisible_by": (0, ">= 1"), "model.rotary_base": (0.0, "> 0"),
    "model.rope_scaling_factor": (-1.0, "> 0 or null"), "model.rotary_percent": (1.5, "in (0, 1]"),
    "model.norm_epsilon": (0.0, "> 0"), "model.init_method_std": (-0.02, "> 0"),
    "model.hidden_dropout": (1.0, "in [0, 1)"), "model.attention_dropout": (-0.1, "in [0, 1)"),
    "train.seq_length": (0, ">= 1"), "train.micro_batch_size": (0, ">= 1"), "train.global_batch_size": (-8, ">= 1"),
    "train.iters": (0, ">= 1"), "train.seed": (2**32, "in [0, 4294967295]"), "train.eval_interval": (-1, ">= 0"),
    "train.eval_iters": (0, ">= 1"), "train.exit_duration_minutes": (0.0, "> 0 or null"),
    "train.max_skipped_steps": (0, ">= 1"), "train.loss_spike_factor": (-1.0, ">= 0"),
    "optimizer.lr": (-0.0003, ">= 0"), "optimizer.beta1": (1.0, "in [0, 1)"), "optimizer.beta2": (-0.5, "in [0, 1)"),
    "optimizer.eps": (0.0, "> 0"), "optimizer.weight_decay": (-0.1, ">= 0"), "optimizer.clip_grad": (-1.0, ">= 0"),
    "scheduler.warmup_iters": (-1, ">= 0"), "scheduler.decay_iters": (0, ">= 1 or null"),
    "scheduler.min_lr_ratio": (-0.1, "in [0, 1]"), "scheduler.wsd_decay_iters": (0, ">= 1 or null"),
    "precision.initial_loss_scale": (0.0, "> 0"), "data.num_workers": (-1, ">= 0"), "tokenizer.vocab_size": (1, ">= 2 or null"),
    "checkpoint.interval": (-1, ">= 0"), "checkpoint.keep": (-1, ">= 0"), "checkpoint.export_hf_every": (-1, ">= 0"),
    "logging.interval": (0, ">= 1"), "runtime.timeout_minutes": (0, ">= 1"),
    "eval.interval": (-1, ">= 0"), "eval.micro_batch_size": (0, ">= 1"), "eval.limit": (0, ">= 1 or null"),
    "generation.temperature": (-1.0, ">= 0"), "generation.top_p": (5.0, "in (0, 1]"), "generation.top_k": (-1, ">= 0"),
    "generation.repetition_penalty": (0.0, "> 0"), "generation.max_new_tokens": (-5, ">= 1"),
}


def _set(job: JobConfig, dotted: str, value) -> JobConfig:
    group, key = dotted.split(".")
    setattr(getattr(job, group), key, value)
    return job


def test_every_number_out_of_range_is_named_in_one_message():
    job = _job(runtime__device="cpu")
    for key, (value, _) in OUT_OF_RANGE.items():
        _set(job, key, value)
    with pytest.raises(MegatronSotaError) as info:
        validate_job(job, 1, CPU_ONLY)
    lines = str(info.value).splitlines()
    missing = [key for key, (value, rule) in OUT_OF_RANGE.items() if f"  - {key} must be {rule}, got {value}" not in lines]
    assert not missing, f"not named in the one message: {missing}\n{info.value}"
    assert len(lines) == 1 + len(OUT_OF_RANGE)  # the heading, then one line per key (no divisibility of broken sizes)


@pytest.mark.parametrize("key", sorted(OUT_OF_RANGE))
def test_each_number_out_of_range_is_refused_alone(key):
    value, rule = OUT_OF_RANGE[key]
    with pytest.raises(MegatronSotaError, match=None) as info:
        validate_job(_set(_job(runtime__device="cpu"), key, value), 1, CPU_ONLY)
    assert f"{key} must be {rule}, got {value}" in str(info.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused(value):
    floats = ("optimizer.lr", "optimizer.beta2", "model.norm_epsilon", "train.exit_duration_minutes", "generation.temperature")
    job = _job(runtime__device="cpu", data__split=[98.0, value, 1.0])
    for key in floats:
        _set(job, key, value)
    with pytest.raises(MegatronSotaError) as info:
        validate_job(job, 1, CPU_ONLY)
    message = str(info.value)
    assert all(f"{key} must be finite and " in message for key in floats), message
    assert "data.split must be three non-negative train/valid/test proportions" in message


def test_numbers_at_the_edges_of_their_ranges_are_accepted():
    edges = {
        "optimizer.lr": 0.0, "optimizer.beta1": 0.0, "optimizer.beta2": 0.999, "optimizer.weight_decay": 0.0,
        "optimizer.clip_grad": 0.0, "model.hidden_dropout": 0.0, "model.rotary_percent": 1.0, "scheduler.min_lr_ratio": 1.0,
        "train.seed": 2**32 - 1, "train.eval_interval": 0, "train.loss_spike_factor": 0.0, "checkpoint.keep": 0,
        "checkpoint.interval": 0, "generation.temperature": 0.0, "generation.top_p": 1.0, "generation.top_k": 0,
        "generation.max_new_tokens": 1, "tokenizer.vocab_size": None, "model.kv_channels": None,
    }
    job = _job(runtime__device="cpu")
    for key, value in edges.items():
        _set(job, key, value)
    assert validate_job(job, 1, CPU_ONLY).dp == 1


# Refusals that used to come one at a time from model building, kernel choice, optimizer and
# loop set-up (after the process groups existed), each with the mistake that causes it.
LATE_REFUSALS = {
    "model.transformer_impl=transformer_engine needs a CUDA device": dict(model__transformer_impl="transformer_engine"),
    "precision.fp8=hybrid needs Transformer Engine, which is not importable here": dict(precision__fp8="hybrid"),
    "model.attention_dropout=0.1 with parallel.cp=2: the local layer spec's context-parallel attention has no attention dropout":
        dict(parallel__cp=2, model__attention_dropout=0.1),
    "kernels.rms_norm=true applies to the local layer spec, but this run uses Transformer Engine's": dict(kernels__rms_norm=True),
    "kernels.compile_layers=true applies to the local layer spec": dict(kernels__compile_layers=True),
    "scheduler.wsd_decay_style must be one of linear, cosine, exponential, minus_sqrt, got 'square'": dict(scheduler__wsd_decay_style="square"),
    "scheduler.decay_iters must be >= 1 or null, got 0": dict(scheduler__decay_iters=0),
    "scheduler.min_lr_ratio must be in [0, 1], got 1.5": dict(scheduler__min_lr_ratio=1.5),
    "precision.fp8_recipe must be one of delayed, tensorwise, mxfp8, blockwise, custom, got 'fast'": dict(precision__fp8_recipe="fast"),
    "logging.interval must be >= 1, got 0": dict(logging__interval=0),
    "data.num_workers must be >= 0, got -1": dict(data__num_workers=-1),
}


def test_every_late_refusal_is_listed_in_one_message_by_validate_job():
    mistakes = {key: value for changes in LATE_REFUSALS.values() for key, value in changes.items()}
    job = _job(runtime__device="cpu", **mistakes)
    with pytest.raises(MegatronSotaError) as info:
        validate_job(job, 2, CPU_ONLY)
    message = str(info.value)
    missing = [expected for expected in LATE_REFUSALS if expected not in message]
    assert not missing, f"not in the one message:\n{message}"
    assert message.count("invalid configuration") == 1
    # Without the mistakes the same machine takes the config: each refusal above is its mistake's.
    assert validate_job(_job(runtime__device="cpu"), 2, CPU_ONLY).dp == 2


@pytest.mark.parametrize(
    "machine, overrides, expected",
    [
        (CPU_ONLY, dict(runtime__device="cuda"), "runtime.device=cuda but torch sees no CUDA device (use runtime.device=cpu)"),
        (Machine(cuda=True, transformer_engine=False), dict(model__transformer_impl="transformer_engine"),
         "model.transformer_impl=transformer_engine needs Transformer Engine, which is not importable here"),
        # auto picks Transformer Engine on a GPU machine that has it: its own norms, no compiled local layers.
        (Machine(cuda=True, transformer_engine=True), dict(kernels__rms_norm=True),
         "kernels.rms_norm=true applies to the local layer spec, but this run uses Transformer Engine's"),
        (Machine(cuda=True, transformer_engine=False), dict(precision__fp8="e4m3"), "precision.fp8=e4m3 needs Transformer Engine"),
    ],
)
def test_what_auto_becomes_is_decided_from_the_machine_before_any_process_group(machine, overrides, expected):
    with pytest.raises(MegatronSotaError, match=None) as info:
        validate_job(_job(**overrides), 1, machine)
    assert expected in str(info.value)


def test_the_same_choices_pass_where_the_machine_has_them():
    validate_job(_job(runtime__device="cuda", model__transformer_impl="transformer_engine", precision__fp8="e4m3", parallel__cp=2), 2,
                 Machine(cuda=True, transformer_engine=True))
    validate_job(_job(kernels__rms_norm=True, model__transformer_impl="local"), 1, Machine(cuda=True, transformer_engine=True))


def test_context_parallelism_needs_no_transformer_engine():
    assert validate_job(_job(runtime__device="cpu", parallel__cp=2), 2, CPU_ONLY).dp == 1


@pytest.mark.parametrize(
    "tasks, expected",
    [
        (["no_such_task"], "eval.tasks: task 'no_such_task'"),
        (["arithmetic_mc"], "task arithmetic_mc (multiple_choice) reads text, but the run has no text tokenizer"),
        (["aime_sample"], "task aime_sample samples its answers (temperature 0.6), which in-loop evaluation cannot do"),
    ],
)
def test_eval_task_files_are_checked_by_evaluation(tasks, expected):
    from megatron_sota.evaluation.task_checks import task_problems

    problems = task_problems(_job(eval__tasks=tasks, eval__interval=10))
    assert any(expected in p for p in problems), problems
    assert task_problems(_job(eval__tasks=tasks, eval__interval=0)) == []  # in-loop evaluation off: not read


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.iterz=5", "unknown config key 'train.iterz' (did you mean 'iters'?); valid keys of 'train': iters,"),
        ("model.hiden_size=3", "did you mean 'hidden_size'?"),
        ("paralel.tp=2", "unknown config key 'paralel' (did you mean 'parallel'?); valid keys of the root config"),
    ],
)
def test_misspelled_override_names_the_valid_keys(override, expected):
    with pytest.raises(MegatronSotaError, match=None) as info:
        check_override_keys([override])
    assert expected in str(info.value)


def test_group_choices_and_hydra_keys_are_not_checked_as_fields():
    check_override_keys(["model=llama_8b", "hydra.run.dir=/tmp/x", "+extra=1", "parallel.tp=2", "experiment=quickstart_cpu"])


def _compose(overrides):
    register_configs()
    with initialize_config_dir(config_dir=os.path.abspath(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_shipped_preset_composes_into_the_typed_config(preset):
    job = to_job_config(_compose([f"model={preset}"]))
    assert job.model.name == preset


def test_appended_unknown_key_is_rejected_with_valid_keys():
    with pytest.raises(MegatronSotaError, match="unknown config key 'model.foo'; valid keys of 'model': name,"):
        to_job_config(_compose(["+model.foo=1"]))


def test_overrides_of_the_documented_keys_compose():
    job = to_job_config(
        _compose(
            [
                "model=tiny", "precision=fp32", "parallel.tp=2", "parallel.pp=2", "parallel.vpp=2", "parallel.sp=true",
                "train.iters=50", "train.global_batch_size=8", "train.micro_batch_size=2", "train.seq_length=256",
                "train.seed=1234", "data.paths=[a,b]", "data.weights=[1,2]", "data.split=[98,1,1]",
                "tokenizer.type=SentencePieceTokenizer", "tokenizer.model=x.model", "logging.interval=1",
                "scheduler.warmup_iters=0", "eval.tasks=[arithmetic_mc,python_docs_ppl]", "eval.interval=100", "eval.limit=50",
            ]
        )
    )
    assert (job.parallel.tp, job.parallel.vpp, job.parallel.sp, job.train.iters) == (2, 2, True, 50)
    assert job.data.weights == [1.0, 2.0] and job.precision.dtype == "fp32"
    assert job.eval.tasks == ["arithmetic_mc", "python_docs_ppl"] and (job.eval.interval, job.eval.limit) == (100, 50)


def test_experiment_overrides_several_groups():
    job = to_job_config(_compose(["experiment=quickstart_cpu"]))
    assert (job.name, job.train.iters, job.scheduler.warmup_iters) == ("quickstart", 200, 30)


def test_tokenizer_files_are_stored_as_absolute_paths(tmp_path, monkeypatch):
    """Checkpoints keep the run config; an export run elsewhere must still find the tokenizer."""
    from megatron_sota.config.run import TokenizerConfig

    monkeypatch.chdir(tmp_path)
    config = TokenizerConfig(type="GPT2BPETokenizer", vocab_file="gpt2/vocab.json", merge_file="/abs/merges.txt")
    absolute = config.with_absolute_paths()
    assert (absolute.model, absolute.vocab_file, absolute.merge_file) == (None, str(tmp_path / "gpt2/vocab.json"), "/abs/merges.txt")
