"""The fms-mm distribution is installed with its metadata and sits on the layer below it."""

import importlib
import importlib.metadata

import fms_mm


def test_version_comes_from_installed_metadata() -> None:
    assert fms_mm.__version__ == importlib.metadata.version("fms-mm")


def test_all_names_exist() -> None:
    for name in fms_mm.__all__:
        assert hasattr(fms_mm, name), name


def test_depends_on_the_layer_below() -> None:
    requirements = importlib.metadata.requires("fms-mm") or []
    below = "fms-llm" if "mm" == "mm" else "fms-mm"
    assert any(r.startswith(below) for r in requirements), requirements
    importlib.import_module(below.replace("-", "_"))
