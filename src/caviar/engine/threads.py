"""PyTorch's threads on a machine whose cores other processes keep busy.

PyTorch's threads spin-wait for one another at every operation. While one of them waits for
a core that another process holds, the others spin instead of working, and two threads then
train far slower than one (load ~9 on 2 cores: 2 threads 10.5 member-epochs/s, 1 thread 191;
bench/README.md, "PBT again: OpenMP spinning"). Linux counts, for every thread, the time it
ran and the time it waited for a core while ready to run (schedstat), so a training loop can
tell: ``CoreWaits`` reads the main thread's, window by window, and says when the machine is
busy; ``OneThreadWhenBusy`` then moves a training loop to one thread (the tuner's, the
estimators' ``training.train_network``, panda's).
"""

from __future__ import annotations

import os

import torch

# A window is BUSY_WINDOW_S of the main thread's running; the machine is busy when the main
# thread waited for a core BUSY_WAIT_SHARE of that or more: quiet tunes measured 0.01-0.07,
# tunes beside a spinning process a core 1.08-1.26 (bench/README.md, "The budget on a busy
# machine"). A tune does not judge its first window: its own start (its writer's process
# importing beside it) measured 0.26-0.37 in quiet `caviar tune` runs.
BUSY_WAIT_SHARE, BUSY_WINDOW_S = 0.25, 1.0


def main_thread_cpu() -> tuple[float, float] | None:
    """Seconds this process's main thread has run, and waited for a core while ready to run
    (Linux's schedstat; None where the kernel does not count them)."""
    try:
        with open(f"/proc/self/task/{os.getpid()}/schedstat") as f:
            run, wait = f.read().split()[:2]
        return int(run) / 1e9, int(wait) / 1e9
    except (OSError, ValueError):
        return None


class CoreWaits:
    """The main thread's waits for a core, from when it is made, window by window;
    ``skip_first``: the first window is the run's own start, not judged (a tune's: its
    writer's process starts beside it)."""

    def __init__(self, skip_first: bool = False) -> None:
        self._mark = main_thread_cpu()
        self._skip = skip_first

    def busy(self) -> float | None:
        """The main thread's wait over its running in the window that has just closed, if
        that is ``BUSY_WAIT_SHARE`` or more (the cores are busy with other work); None while
        a window is open, for a skipped first window, and where the kernel does not count."""
        if self._mark is None:
            return None
        now = main_thread_cpu()
        run, wait = now[0] - self._mark[0], now[1] - self._mark[1]
        if run < BUSY_WINDOW_S:
            return None
        self._mark, skipped, self._skip = now, self._skip, False
        if skipped or wait < BUSY_WAIT_SHARE * run:
            return None
        return wait / run


class OneThreadWhenBusy:
    """A training loop's PyTorch threads: ``check`` after each epoch moves them to one once
    other processes keep the cores busy (``CoreWaits``), for the rest of the loop;
    ``restore`` gives back the ones found. Where there is one thread already, nothing
    changes."""

    def __init__(self, skip_first: bool = False) -> None:
        self.threads = torch.get_num_threads()
        self._waits = CoreWaits(skip_first) if self.threads > 1 else None

    def check(self) -> float | None:
        """The main thread's wait share, when it has just moved the loop to one thread."""
        share = self._waits.busy() if self._waits is not None else None
        if share is not None:
            torch.set_num_threads(1)
            self._waits = None
        return share

    def restore(self) -> None:
        torch.set_num_threads(self.threads)
