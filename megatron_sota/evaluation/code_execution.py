"""Turns HumanEval/MBPP-form problems (prompt, test, entry_point) and generated completions into programs and runs
many of them in the sandbox concurrently. It does not read problem files or compute pass@k (task_files, metrics)."""

import logging
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

from megatron_sota.evaluation.sandbox import SandboxLimits, SandboxResult, run_sandboxed, sandbox_layers

logger = logging.getLogger(__name__)

# Where a HumanEval completion ends: the first new top-level statement after the function body (the runner cuts
# generations there). The list used by the Codex paper's evaluation and lm-evaluation-harness's humaneval task
# (generation_kwargs.until).
STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


CHAT_INSTRUCTION = "Complete the following Python function. Reply with the whole function in a ```python code block.\n\n```python\n{prompt}```"
"""The user turn of a chat-formatted code task (`chat: true`); {prompt} is the problem's prompt."""
_CODE_BLOCK = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


def answer_code(text: str, chat: bool) -> str:
    """The code a generated answer adds after the problem's prompt: a completion as it is (generation was cut at
    STOP_SEQUENCES), or (chat) the first fenced code block of the reply, else the reply, on a new line: a whole
    function redefines the prompt's, an indented body continues it."""
    if not chat:
        return text
    block = _CODE_BLOCK.search(text)
    return "\n" + (block.group(1) if block else text)


def completion_program(prompt: str, completion: str, test: str, entry_point: str) -> str:
    """The program whose exit status says whether `completion` solves the problem: the prompt with the completion
    (the function), then the test (which defines `check(candidate)`), then the call of `check` on the function."""
    return f"{prompt}{completion}\n\n{test}\n\ncheck({entry_point})\n"


def run_samples(programs: Sequence[str], limits: SandboxLimits = SandboxLimits(), workers: int = 4,
                progress: Callable[[int, int], None] | None = None) -> list[SandboxResult]:
    """One result per program, in the order given; `workers` sandboxed processes at a time (threads only wait on
    them). `progress(done, total)` is called as each finishes."""
    layers = sandbox_layers()  # probed once, before the threads start
    logger.info("sandbox layers active: %s; missing: %s", ", ".join(n for n, on in layers.items() if on) or "none",
                ", ".join(n for n, on in layers.items() if not on) or "none")
    results: list[SandboxResult | None] = [None] * len(programs)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sandbox") as pool:
        futures = {pool.submit(run_sandboxed, program, limits): index for index, program in enumerate(programs)}
        for done, future in enumerate(as_completed(futures), start=1):
            results[futures[future]] = future.result()  # run_sandboxed returns an "error" result, never raises
            if progress is not None:
                progress(done, len(programs))
    return results
