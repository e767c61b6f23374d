"""The application layer: how a run is put together and executed, apart from the LightningModules and DataModules.

============================ =====================================================================================
module                       job
============================ =====================================================================================
:mod:`tasks.app.runner`       build a run (task, data, trainer, callbacks, loggers) from a composed Hydra config
                              and execute it: ``fit`` → ``test`` → ``metrics.json``
:mod:`tasks.app.cli`          the LightningCLI front end (``tools/cli.py``) and the Hydra → LightningCLI config
                              translation (``tools/hydra2cli.py``)
:mod:`tasks.app.entry_points` console scripts (``zoo-train``, ``zoo-cli``, ``zoo-list``, …) behind ``tools/``
:mod:`tasks.app.strategies`   Lightning strategies carrying the zoo's parallelism plan (``conf/strategy/``)
:mod:`tasks.app.checkpoint`   checkpoint IO: atomic writes and the ``ckpt_path=last`` lookup
:mod:`tasks.app.quiet`        silencing library messages that tell a user nothing about their run
============================ =====================================================================================
"""
