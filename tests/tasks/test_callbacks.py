"""tasks.callbacks.CpuThreads: intra-op threads that follow the cores other processes leave free."""

from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from tasks.callbacks import CpuSampler, CpuThreads, threads_for
from tasks.callbacks import threads as callbacks

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")


@pytest.mark.parametrize(
    ("usable", "others", "ceiling", "expected"),
    [
        (2, 0.0, 2, 2),  # alone
        (2, 0.3, 2, 2),  # background noise keeps both threads
        (2, 0.7, 2, 1),  # one core taken: one thread
        (2, 1.9, 2, 1),  # never fewer than one
        (8, 2.2, 8, 6),
        (8, 0.0, 4, 4),  # the count the run started with is the ceiling
    ],
)
def test_threads_for_free_cores(usable, others, ceiling, expected):
    assert threads_for(usable, others, ceiling) == expected


def fake_stat(tmp_path, busy_jiffies: list[int], idle_jiffies: list[int]):
    """A /proc/stat with one line per CPU: user = busy, idle = idle."""
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
    for cpu, (busy, idle) in enumerate(zip(busy_jiffies, idle_jiffies)):
        lines.append(f"cpu{cpu} {busy} 0 0 {idle} 0 0 0 0 0 0")
    lines.append("intr 0")
    path = tmp_path / "stat"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_sampler_subtracts_own_cpu_time(tmp_path, monkeypatch):
    clock = iter([100.0, 110.0])
    own = iter([SimpleNamespace(user=5.0, system=0.0), SimpleNamespace(user=11.0, system=1.0)])
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(callbacks.os, "times", lambda: next(own))
    monkeypatch.setattr(callbacks.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    stat = fake_stat(tmp_path, [0, 0], [0, 0])
    sampler = CpuSampler(str(stat))
    tick = sampler.tick
    # 10 s later both CPUs were busy the whole time (20 CPU-s), of which this process used 7 CPU-s
    fake_stat(tmp_path, [10 * tick, 10 * tick], [0, 0])
    assert sampler.others() == pytest.approx(1.3)


def test_sampler_counts_only_this_process_cpus(tmp_path, monkeypatch):
    clock = iter([0.0, 10.0])
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(callbacks.os, "times", lambda: SimpleNamespace(user=0.0, system=0.0))
    monkeypatch.setattr(callbacks.os, "sched_getaffinity", lambda pid: {1}, raising=False)
    sampler = CpuSampler(str(fake_stat(tmp_path, [0, 0], [0, 0])))
    fake_stat(tmp_path, [10 * sampler.tick, 5 * sampler.tick], [0, 5 * sampler.tick])  # cpu0 is not ours
    assert sampler.others() == pytest.approx(0.5)


@linux_only
def test_sampler_sees_a_busy_sibling_process():
    """A real busy loop beside an idle test process is ≥ half a CPU of other work on any Linux machine."""
    sampler = CpuSampler()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        sampler.others()  # start the window once the sibling runs
        time.sleep(1.5)
        assert sampler.others() >= 0.5
    finally:
        spinner.kill()
        spinner.wait()


class FakeTrainer:
    strategy = SimpleNamespace(root_device=torch.device("cpu"))


def test_callback_follows_other_load_and_restores_threads(monkeypatch):
    threads = {"n": 2}
    monkeypatch.setattr(callbacks.torch, "get_num_threads", lambda: threads["n"])
    monkeypatch.setattr(callbacks.torch, "set_num_threads", lambda n: threads.update(n=n))
    monkeypatch.setattr(callbacks, "usable_cpus", lambda: 2)
    loads = iter([1.0, 0.1])
    monkeypatch.setattr(CpuSampler, "others", lambda self: next(loads))
    callback = CpuThreads(interval=0.0)
    callback.setup(FakeTrainer(), None, "fit")
    callback.on_train_batch_end(FakeTrainer(), None)
    assert threads["n"] == 1  # another job took a core
    callback.on_train_batch_end(FakeTrainer(), None)
    assert threads["n"] == 2  # it ended
    callback.teardown(FakeTrainer(), None, "fit")
    assert threads["n"] == 2


def test_callback_caps_threads_at_usable_cpus(monkeypatch):
    threads = {"n": 8}
    monkeypatch.setattr(callbacks.torch, "get_num_threads", lambda: threads["n"])
    monkeypatch.setattr(callbacks.torch, "set_num_threads", lambda n: threads.update(n=n))
    monkeypatch.setattr(callbacks, "usable_cpus", lambda: 2)
    callback = CpuThreads(adapt=False)
    callback.setup(FakeTrainer(), None, "fit")
    assert threads["n"] == 2
    callback.teardown(FakeTrainer(), None, "fit")
    assert threads["n"] == 8  # the process gets its own setting back


def test_callback_leaves_accelerator_runs_alone(monkeypatch):
    monkeypatch.setattr(callbacks.torch, "set_num_threads", lambda n: pytest.fail("threads changed on a GPU run"))
    monkeypatch.setattr(callbacks, "usable_cpus", lambda: 1)
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("meta")))
    callback = CpuThreads()
    callback.setup(trainer, None, "fit")
    callback.on_train_batch_end(trainer, None)
    assert callback.sampler is None


# ------------------------------------------------------------------------------------------- BudgetProgressBar
from lightning.pytorch.demos.boring_classes import BoringModel  # noqa: E402

from tasks.base import TrainingBudget  # noqa: E402
from tasks.callbacks import BudgetProgressBar  # noqa: E402


class RolloutBudgeted(BoringModel):
    """Two epochs of three batches, counted as six rollouts (as task=rl counts its budget)."""

    def training_budget(self) -> TrainingBudget:
        return TrainingBudget("rollout", self.global_step, 6)


def fit_with(bar: BudgetProgressBar, module) -> None:
    import lightning as L

    trainer = L.Trainer(
        max_epochs=2, limit_train_batches=3, limit_val_batches=1, num_sanity_val_steps=0, callbacks=[bar],
        logger=False, enable_checkpointing=False, enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(module)


def test_rich_bar_counts_the_budget_across_epochs():
    bar = BudgetProgressBar(plain=False)
    fit_with(bar, RolloutBudgeted())
    train_tasks = [t for t in bar.progress.tasks if "Rollouts" in t.description]
    assert len(train_tasks) == 1  # one bar for the whole budget, not one per epoch
    assert train_tasks[0].total == 6 and train_tasks[0].completed == 6


def test_plain_lines_for_an_epoch_budget(capsys):
    fit_with(BudgetProgressBar(plain=True, interval=0), BoringModel())
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("epoch 1/2 · step 1/6 (17%) · ") for line in lines), lines
    assert any(line.startswith("epoch 2/2 · step 6/6 (100%) · ") for line in lines), lines
    assert sum(line.startswith("validation (epoch ") for line in lines) == 2
