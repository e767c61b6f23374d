"""The generic Registry: registration, presets, aliases, errors, lazy built-ins, import hooks."""

from __future__ import annotations

import sys
import textwrap

import pytest

from zoo.errors import RegistryError
from zoo.registries import ALL, CHANNEL_ATTENTION
from zoo.registry import Registry, import_modules


def make_registry() -> Registry:
    return Registry("widget")


def test_register_get_build_and_names():
    reg = make_registry()

    @reg.register("adder", aliases=("plus",))
    def adder(a, b=1):
        return a + b

    assert reg.get("adder") is adder
    assert reg.get("PLUS") is adder  # case-insensitive, aliases resolve
    assert reg.build("adder", 2, b=5) == 7
    assert reg.names() == ["adder", "plus"]
    assert reg.canonical("plus") == "adder"
    assert "adder" in reg and "nope" not in reg


def test_presets_are_defaults_that_call_site_kwargs_override():
    reg = make_registry()

    @reg.register("scaled", factor=3)
    @reg.register("plain")
    def scale(x, factor=1):
        return x * factor

    assert reg.build("plain", 2) == 2
    assert reg.build("scaled", 2) == 6
    assert reg.build("scaled", 2, factor=10) == 20
    assert reg.partial("scaled")(5) == 15


def test_name_defaults_to_lowercased_dunder_name():
    reg = make_registry()

    @reg.register()
    class FancyThing:
        pass

    assert reg.get("fancything") is FancyThing


def test_duplicate_raises_naming_the_first_registrant_unless_override():
    reg = make_registry()

    @reg.register("dup")
    def first():
        return 1

    with pytest.raises(RegistryError, match=r"already registered by .*first"):

        @reg.register("dup")
        def second():
            return 2

    @reg.register("dup", override=True)
    def third():
        return 3

    assert reg.build("dup") == 3


def test_duplicate_alias_also_raises():
    reg = make_registry()
    reg.register("a", aliases=("shared",))(lambda: 1)
    with pytest.raises(RegistryError, match="'shared' is already registered"):
        reg.register("b", aliases=("shared",))(lambda: 2)
    assert "b" not in reg  # nothing half-registered


def test_unknown_name_lists_choices_and_suggests_closest():
    with pytest.raises(RegistryError) as info:
        CHANNEL_ATTENTION.get("mcaa")
    message = str(info.value)
    assert "Unknown channel_attention 'mcaa'" in message
    for name in ("none", "se", "eca", "mca_e", "mca_s", "mca"):
        assert name in message
    assert "Did you mean 'mca'" in message
    assert info.value.choices and "mca" in info.value.choices


def test_non_string_name_is_a_clear_error():
    with pytest.raises(RegistryError, match="must be a string"):
        CHANNEL_ATTENTION.get(3)  # type: ignore[arg-type]


def test_escape_hatch_imports_module_colon_object():
    assert CHANNEL_ATTENTION.get("collections:OrderedDict").__name__ == "OrderedDict"


def test_builtin_locations_are_imported_lazily(tmp_path, monkeypatch):
    (tmp_path / "zoo_lazy_holder.py").write_text(
        "from zoo.registry import Registry\nREG = Registry('lazy', locations=['zoo_lazy_widgets'])\n"
    )
    (tmp_path / "zoo_lazy_widgets.py").write_text(
        textwrap.dedent("""
        from zoo_lazy_holder import REG
        @REG.register("lazy_one")
        def lazy_one():
            return "built"
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import zoo_lazy_holder

        assert "zoo_lazy_widgets" not in sys.modules  # defining the registry imports nothing
        assert zoo_lazy_holder.REG.build("lazy_one") == "built"  # the first lookup imports the location
        assert "zoo_lazy_widgets" in sys.modules
    finally:
        sys.modules.pop("zoo_lazy_widgets", None)
        sys.modules.pop("zoo_lazy_holder", None)


def test_failed_location_import_is_retried(monkeypatch):
    reg = Registry("flaky", locations=["zoo_module_that_does_not_exist"])
    with pytest.raises(ModuleNotFoundError):
        reg.names()
    with pytest.raises(ModuleNotFoundError):  # not silently marked as loaded
        reg.names()


def test_import_modules_and_zoo_imports_env(tmp_path, monkeypatch):
    (tmp_path / "zoo_env_widgets.py").write_text(
        "from zoo.registries import CHANNEL_ATTENTION\n"
        "import torch.nn as nn\n"
        "@CHANNEL_ATTENTION.register('env_ca')\n"
        "class EnvCA(nn.Identity):\n"
        "    def __init__(self, channels, *, device=None, dtype=None):\n"
        "        super().__init__()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import_modules(["", "zoo_env_widgets"])
        assert CHANNEL_ATTENTION.get("env_ca").__name__ == "EnvCA"
    finally:
        CHANNEL_ATTENTION.unregister("env_ca")
        sys.modules.pop("zoo_env_widgets", None)


def test_registries_file_lists_every_extension_point():
    for kind in ("attention", "ffn", "channel_attention", "objective", "backbone", "model", "task", "data"):
        assert kind in ALL
    assert {"none", "se", "eca", "mca_e", "mca_s", "mca"} <= set(ALL["channel_attention"].names())
    assert "vision" in ALL["task"].names()
    assert {"fashion_mnist", "cifar10", "cifar100", "image_folder"} <= set(ALL["data"].names())
    assert {"resnet20", "resnet56", "resnet18", "resnet50"} <= set(ALL["backbone"].names())


def test_list_shows_aliases_beside_their_component(capsys):
    from tasks.app.entry_points import list_components
    from zoo.registries import CHANNEL_ATTENTION

    assert CHANNEL_ATTENTION.aliases("eca") == ["efficient_channel_attention"]
    assert CHANNEL_ATTENTION.aliases("efficient_channel_attention") == ["efficient_channel_attention"]
    list_components(["channel_attention"])
    rows = capsys.readouterr().out.splitlines()
    assert rows[0] == "channel_attention:"
    names = [row.split()[0] for row in rows[1:]]
    assert names == CHANNEL_ATTENTION.names(aliases=False) and "efficient_channel_attention" not in names
    assert any(row.split()[0] == "eca" and row.endswith("(alias: efficient_channel_attention)") for row in rows)
    list_components(["channel_attention", "efficient*"])  # a pattern matching an alias shows its component
    assert [row.split()[0] for row in capsys.readouterr().out.splitlines()[1:]] == ["eca"]
