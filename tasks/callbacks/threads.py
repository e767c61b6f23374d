"""Intra-op threads that follow the CPU cores a run actually gets."""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota (``cpu.max``)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


class CpuSampler:
    """How busy the CPUs this process may use are with *other* work, from ``/proc/stat`` and the process's own
    CPU time: ``others = Δbusy(our CPUs) / tick − Δcpu_time(this process)``, in CPUs, over the time between two
    calls. Steal time (a hypervisor running other guests) counts as busy.
    """

    def __init__(self, stat_path: str = "/proc/stat") -> None:
        self.stat_path = stat_path
        self.cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.last = self._read()

    @property
    def available(self) -> bool:
        """Whether the system reports per-CPU times (Linux)."""
        return self.last is not None

    def _read(self) -> tuple[float, float, float] | None:
        """``(wall s, busy CPU-s of our CPUs, this process's CPU-s)``, or None without ``/proc/stat``."""
        try:
            lines = Path(self.stat_path).read_text().splitlines()
        except OSError:
            return None
        busy = 0
        for line in lines:
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            if self.cpus is not None and int(name[3:]) not in self.cpus:
                continue
            values = [int(v) for v in fields[:8]]
            busy += sum(values) - values[3] - values[4]  # all but idle and iowait
        times = os.times()
        return time.monotonic(), busy / self.tick, times.user + times.system

    def others(self) -> float | None:
        """CPUs' worth of other work since the previous call (≥ 0), or None where unavailable."""
        now = self._read()
        if now is None or self.last is None or now[0] <= self.last[0]:
            return None
        (wall0, busy0, own0), (wall1, busy1, own1) = self.last, now
        self.last = now
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / (wall1 - wall0))


def threads_for(usable: int, others: float, ceiling: int) -> int:
    """Intra-op threads for ``usable`` CPUs of which ``others`` are busy with other work: the free CPUs, rounded
    up from 0.6 of one (a little hysteresis), at least 1 and at most ``ceiling``."""
    return max(1, min(ceiling, math.floor(usable - others + 0.4)))


class CpuThreads(Callback):
    """PyTorch's intra-op threads follow the CPUs a CPU run actually gets.

    OpenMP threads busy-wait at every parallel region's barrier, so more threads than free cores is ruinous: two
    100-step runs of the main job side by side on 2 cores fit in 164 s each with 2 threads apiece, 68 s each with
    this callback, 38 s alone (``tools/bench/cpu_sharing.py``, ``docs/benchmarks.md``). At setup the thread count is
    capped by the CPUs the process may use (affinity mask, cgroup quota); then, every ``interval`` seconds of
    training, it is set to the CPUs that other processes leave free (:class:`CpuSampler`, :func:`threads_for`),
    never above the count the run started with (``OMP_NUM_THREADS`` or ``torch.set_num_threads`` set by the user
    stay the ceiling). Changes are logged. Runs on accelerators other than the CPU are left alone.

    Args:
        interval: seconds between two decisions.
        adapt: follow other processes' load; False only applies the setup cap.
    """

    def __init__(self, interval: float = 10.0, adapt: bool = True) -> None:
        self.interval = interval
        self.adapt = adapt
        self.sampler: CpuSampler | None = None
        self.usable = 1
        self.ceiling = 1
        self.initial: int | None = None
        self.next_check = math.inf

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.strategy.root_device.type != "cpu" or self.sampler is not None:
            return
        self.usable = usable_cpus()
        self.initial = torch.get_num_threads()
        self.ceiling = max(1, min(self.initial, self.usable))
        if self.ceiling != torch.get_num_threads():
            log.info("%d CPUs usable: intra-op threads %d → %d", self.usable, torch.get_num_threads(), self.ceiling)
            torch.set_num_threads(self.ceiling)
        self.sampler = CpuSampler()
        self.next_check = time.monotonic() + self.interval

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not self.adapt or self.sampler is None or not self.sampler.available or time.monotonic() < self.next_check:
            return
        self.next_check = time.monotonic() + self.interval
        others = self.sampler.others()
        if others is None:
            return
        threads = threads_for(self.usable, others, self.ceiling)
        if threads != torch.get_num_threads():
            log.info(
                "other processes keep %.1f of %d CPUs busy: intra-op threads %d → %d",
                others, self.usable, torch.get_num_threads(), threads,
            )  # fmt: skip
            torch.set_num_threads(threads)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Give the process back the thread count it had (later runs in the same process start from it)."""
        if self.initial is not None:
            torch.set_num_threads(self.initial)
        self.sampler, self.initial = None, None
