"""Lightning callbacks of the zoo's runs (instantiated from ``conf/callbacks/`` by ``_target_``).

============================ ===========================================================================
``LastCheckpoint``           ``last.ckpt`` at every validation, at the end of fit and on SIGTERM
``CpuThreads``               CPU runs: intra-op threads = the cores other processes leave free
``BudgetProgressBar``        Rich's bars counting the run's own budget; plain lines when not on a terminal
``CompactModelSummary``      Rich's summary without the columns that say nothing
============================ ===========================================================================
"""

from tasks.callbacks.checkpoint import LastCheckpoint
from tasks.callbacks.progress import BudgetProgressBar
from tasks.callbacks.summary import CompactModelSummary
from tasks.callbacks.threads import CpuSampler, CpuThreads, threads_for, usable_cpus

__all__ = [
    "BudgetProgressBar",
    "CompactModelSummary",
    "CpuSampler",
    "CpuThreads",
    "LastCheckpoint",
    "threads_for",
    "usable_cpus",
]
