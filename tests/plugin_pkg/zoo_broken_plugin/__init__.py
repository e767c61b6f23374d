"""A plugin whose import fails: zoo must warn, name it, and go on."""

raise ImportError("zoo_broken_plugin needs a library that is not installed")
