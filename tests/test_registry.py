"""The method registry and baseline plugins: duplicates, broken plugin files, a missing plugin directory and
``extra`` keys a method does not read. Plugins are tiny files in ``tmp_path``; nothing trains.

    .venv/bin/python -m pytest tests/test_registry.py -q
"""

import pytest

from ssvi import methods
from ssvi.config import ConfigError, RunConfig
from ssvi.errors import UserError
from ssvi.methods import EXTRA_BASELINES_ENV, get_method

GOOD_PLUGIN = '''
from ssvi.methods import Method, register_method

@register_method("good_plugin")
class Good(Method):
    extra_keys = frozenset({"temperature"})
'''


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """A plugin directory in SSVI_EXTRA_BASELINES and a registry that loads it afresh (the built-in methods
    stay registered: their modules are imported once per process)."""
    methods.load_plugins()
    monkeypatch.setattr(methods, "METHODS", dict(methods.METHODS))
    monkeypatch.setattr(methods, "DUPLICATES", {}, raising=False)
    monkeypatch.setattr(methods, "PLUGIN_FAILURES", {}, raising=False)
    monkeypatch.setattr(methods, "_plugins_loaded", False)
    monkeypatch.setenv(EXTRA_BASELINES_ENV, str(tmp_path))

    def write(name: str, text: str):
        (tmp_path / name).write_text(text)
        return tmp_path / name
    return write


def test_a_plugin_registering_an_existing_name_is_an_error_naming_both_modules(plugins):
    path = plugins("impostor.py", GOOD_PLUGIN.replace("good_plugin", "ssvi"))
    with pytest.raises(UserError) as info:
        get_method("ssvi")
    message = str(info.value)
    assert "ssvi.methods" in message and str(path) in message and "'ssvi'" in message
    assert get_method("dense_vi").name == "dense_vi"  # other names are unaffected


def test_a_broken_plugin_fails_only_when_a_missing_method_is_asked_for(plugins):
    broken = plugins("broken.py", "def oops(:\n")
    missing_import = plugins("needs_missing.py", "import no_such_module_anywhere\n")
    plugins("good.py", GOOD_PLUGIN)
    assert RunConfig.from_dict({"method": "ssvi"}).method == "ssvi"
    assert get_method("good_plugin").name == "good_plugin"
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({"method": "brokn"})
    message = str(info.value)
    assert "'brokn'" in message and "good_plugin" in message  # the registered names
    assert str(broken) in message and "SyntaxError" in message
    assert str(missing_import) in message and "no_such_module_anywhere" in message
    assert "\n" not in message


def test_a_missing_plugin_directory_is_refused_naming_the_variable(plugins, tmp_path, monkeypatch):
    missing = tmp_path / "no_such_dir"
    monkeypatch.setenv(EXTRA_BASELINES_ENV, str(missing))
    with pytest.raises(UserError) as info:
        get_method("ssvi")
    assert EXTRA_BASELINES_ENV in str(info.value) and str(missing) in str(info.value)


def test_extra_keys_a_method_does_not_read_are_refused(plugins):
    plugins("good.py", GOOD_PLUGIN)
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({"method": "ssvi", "extra": {"temperature": 2.0}})
    assert "'temperature'" in str(info.value) and "ssvi" in str(info.value)
    with pytest.raises(ConfigError, match="'tempo'.*temperature"):
        RunConfig.from_dict({"method": "good_plugin", "extra": {"tempo": 2.0}})
    assert RunConfig.from_dict({"method": "good_plugin", "extra": {"temperature": 2.0}}).extra == {"temperature": 2.0}
