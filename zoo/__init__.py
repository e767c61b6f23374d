"""zoo: interchangeable components of MiniMax-01, MiniMax-M1 and MCA, composed by name.

Importing ``zoo`` is cheap: components are registered when a registry is first looked up.
"""

from zoo.errors import ConfigError, DatasetNotFoundError, RegistryError, ZooError
from zoo.registry import Registry, import_modules, load_plugins

__version__ = "0.1.0"
__all__ = [
    "ConfigError",
    "DatasetNotFoundError",
    "Registry",
    "RegistryError",
    "ZooError",
    "import_modules",
    "load_plugins",
]
