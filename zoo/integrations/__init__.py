"""Bridges from the zoo's components to other frameworks, each an optional extra imported on demand.

================================  ===================================================================================
module                            what it registers
================================  ===================================================================================
``zoo.integrations.mmdet``        ``ZooResNet`` in mmdet's ``MODELS``: the zoo's timm ResNets with a channel attention
                                  as an mmdet backbone (``pip install -e ".[mmdet]"`` plus full mmcv 2.1.0, see
                                  README); load it with ``custom_imports=dict(imports=['zoo.integrations.mmdet'])``
================================  ===================================================================================

Nothing here is imported by the zoo's core: this package's ``__init__`` imports no third-party framework.
"""
