"""The fms-agent distribution is installed with its metadata and sits on the layer below it."""

import importlib
import importlib.metadata

import fms_agent


def test_version_comes_from_installed_metadata() -> None:
    assert fms_agent.__version__ == importlib.metadata.version("fms-agent")


def test_all_names_exist() -> None:
    for name in fms_agent.__all__:
        assert hasattr(fms_agent, name), name


def test_depends_on_the_layer_below() -> None:
    requirements = importlib.metadata.requires("fms-agent") or []
    below = "fms-llm" if "agent" == "mm" else "fms-mm"
    assert any(r.startswith(below) for r in requirements), requirements
    importlib.import_module(below.replace("-", "_"))
