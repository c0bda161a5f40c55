"""Runs planned curation stages with datatrove's executors: local processes, or SLURM job arrays chained by dependencies.

Finished tasks are skipped on a re-run (datatrove's completion markers). It must not build pipelines.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Callable

from datatrove.executor import LocalPipelineExecutor, SlurmPipelineExecutor

from megatron_sota.curation.config import ExecutorConfig
from megatron_sota.curation.layout import RunLayout
from megatron_sota.curation.logs import console_to_file, tail
from megatron_sota.curation.stages import Stage
from megatron_sota.errors import MegatronSotaError

Echo = Callable[[str], None]


def _workers(executor: ExecutorConfig, tasks: int) -> int:
    available = executor.workers if executor.workers > 0 else (os.cpu_count() or 1)
    return max(1, min(available, tasks))


def run_local(stages: list[Stage], executor: ExecutorConfig, layout: RunLayout, echo: Echo) -> dict[str, float]:
    """Runs the stages in order; returns each stage's wall seconds (0 for one already done)."""
    seconds: dict[str, float] = {}
    for number, stage in enumerate(stages, start=1):
        runner = LocalPipelineExecutor(
            stage.pipeline,
            tasks=stage.tasks,
            workers=_workers(executor, stage.tasks),
            logging_dir=layout.logs(stage.name),
            skip_completed=True,
        )
        pending = len(runner.get_incomplete_ranks())
        if pending == 0:
            echo(f"[{number}/{len(stages)}] {stage.name}: all {stage.tasks} tasks already done, skipped")
            seconds[stage.name] = 0.0
            continue
        echo(f"[{number}/{len(stages)}] {stage.name}: {pending} of {stage.tasks} tasks on {runner.workers} workers")
        start = time.perf_counter()
        console = os.path.join(layout.logs(stage.name), "console.log")
        try:
            with console_to_file(console):
                runner.run()
        except Exception:
            echo(f"[{number}/{len(stages)}] {stage.name}: FAILED; the end of {console}:\n{tail(console)}")
            raise
        seconds[stage.name] = time.perf_counter() - start
        echo(f"[{number}/{len(stages)}] {stage.name}: done in {seconds[stage.name]:.1f} s")
    return seconds


def _slurm_executor(stage: Stage, executor: ExecutorConfig, layout: RunLayout,
                    depends: SlurmPipelineExecutor | None) -> SlurmPipelineExecutor:
    return SlurmPipelineExecutor(
        stage.pipeline,
        tasks=stage.tasks,
        time=executor.time,
        partition=executor.partition,
        cpus_per_task=executor.cpus_per_task,
        mem_per_cpu_gb=executor.mem_per_cpu_gb,
        workers=executor.workers,
        job_name=f"{executor.job_name}-{stage.name}",
        qos="",  # clusters without QOS accounting reject --qos; set it through sbatch_args where needed
        env_command=executor.env_command,
        sbatch_args=dict(executor.sbatch_args),
        depends=depends,
        logging_dir=layout.logs(stage.name),
        skip_completed=True,
    )


def submit_slurm(stages: list[Stage], executor: ExecutorConfig, layout: RunLayout, echo: Echo) -> dict[str, str]:
    """Submits every stage (each after the previous one succeeded); returns stage -> job id (-1: already done)."""
    chain: list[SlurmPipelineExecutor] = []
    for stage in stages:
        chain.append(_slurm_executor(stage, executor, layout, chain[-1] if chain else None))
    chain[-1].run()  # launches its dependencies first, in order
    job_ids = {stage.name: str(runner.job_id) for stage, runner in zip(stages, chain)}
    for name, job_id in job_ids.items():
        echo(f"  {name}: " + ("already done" if job_id == "-1" else f"job {job_id}"))
    return job_ids


def _queue(job_names: set[str]) -> list[tuple[str, str, str, str]]:
    """(job id, name, state, reason) of this run's jobs still in the queue."""
    out = subprocess.run(["squeue", "--me", "-h", "-o", "%i|%j|%T|%r"], capture_output=True, text=True, check=True).stdout
    rows = [tuple(line.split("|", 3)) for line in out.splitlines() if line.strip()]
    return [row for row in rows if row[1] in job_names]


def wait_for_slurm(stages: list[Stage], executor: ExecutorConfig, layout: RunLayout, echo: Echo) -> None:
    """Polls the queue until the report exists; a failed stage cancels what waits on it and raises."""
    job_names = {f"{executor.job_name}-{stage.name}" for stage in stages}
    report = layout.report("json")
    last = ""
    while True:
        queued = _queue(job_names)
        if os.path.exists(report) and not any(row[2] in ("RUNNING", "COMPLETING") for row in queued):
            return
        stuck = [row for row in queued if "DependencyNeverSatisfied" in row[3]]
        if stuck or (not queued and not os.path.exists(report)):
            for job_id, *_ in queued:
                subprocess.run(["scancel", job_id], check=False)
            failed = _first_unfinished(stages, layout)
            raise MegatronSotaError(
                f"SLURM stage {failed!r} did not finish: expected all its tasks to complete, found some failed; "
                f"see {os.path.join(layout.logs(failed), 'slurm_logs')} and {os.path.join(layout.logs(failed), 'logs')}. "
                f"Re-running the same command resubmits only unfinished tasks."
            )
        state = ", ".join(f"{name.removeprefix(executor.job_name + '-')} {st.lower()}" for _, name, st, _ in queued
                          if st in ("RUNNING", "PENDING"))
        if state != last:
            echo(f"  queue: {state}")
            last = state
        time.sleep(executor.poll_seconds)


def _first_unfinished(stages: list[Stage], layout: RunLayout) -> str:
    for stage in stages:
        done = os.path.join(layout.logs(stage.name), "completions")
        finished = len(os.listdir(done)) if os.path.isdir(done) else 0
        if finished < stage.tasks:
            return stage.name
    return stages[-1].name
