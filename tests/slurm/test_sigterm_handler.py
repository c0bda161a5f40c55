"""The SLURM fixture's SIGTERM handling (sigterm.py): a SIGTERM interrupts and the cluster is still stopped;
pool workers forked meanwhile keep the default handler, and the default returns afterwards. Needs no SLURM."""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.slurm.sigterm import interrupted_by_sigterm

REPO = Path(__file__).resolve().parents[2]


def _sigterm_is_default(_: int) -> bool:
    return signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_pool_workers_forked_inside_the_block_keep_the_default_handler():
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    stopped = []
    try:
        with interrupted_by_sigterm(lambda: stopped.append(True)):
            assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
            with multiprocessing.get_context("fork").Pool(2) as pool:
                assert pool.map(_sigterm_is_default, range(4)) == [True] * 4
            # leaving the with-block called terminate(); a worker that turned SIGTERM into an exception could hang here
            pool.join()
        assert stopped == [True] and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_script(script: str) -> list[str]:
    # In a child process: a SIGTERM to this pytest process would end the run should the handler be missing.
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO, capture_output=True, text=True, timeout=60)
    return result.stdout.split() + [result.stderr]


def test_sigterm_inside_the_block_interrupts_and_the_stop_still_runs():
    output = _run_script(
        """
        import os, signal, time
        from tests.slurm.sigterm import interrupted_by_sigterm
        try:
            with interrupted_by_sigterm(lambda: print("stopped")):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)
        except KeyboardInterrupt:
            print("interrupted")
        print("default" if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL else "still ours")
        """
    )
    assert output[:-1] == ["stopped", "interrupted", "default"], output[-1]


def test_a_sigterm_reaching_a_child_before_its_fork_hooks_run_still_ends_it():
    # What a late-scheduled Pool worker meets when Pool.terminate() comes first: here a fork hook registered before
    # sigterm.py's sends the SIGTERM. It must end the child, not become a KeyboardInterrupt that a hook swallows.
    output = _run_script(
        """
        import os, signal
        os.register_at_fork(after_in_child=lambda: os.kill(os.getpid(), signal.SIGTERM))
        from tests.slurm.sigterm import interrupted_by_sigterm
        with interrupted_by_sigterm(lambda: None):
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            _, status = os.waitpid(pid, 0)
        print("killed" if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM else f"status={status}")
        """
    )
    assert output[:-1] == ["killed"], output[-1]
