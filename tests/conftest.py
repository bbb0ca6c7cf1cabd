"""Test setup: 8 fake CPU devices (before jax is imported) and one prepared data dir per session."""

import os

# Multi-device code is tested on 8 host devices; this must precede `import jax`.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A data dir shared by the whole session, so each corpus/tokenizer is prepared once."""
    if os.environ.get("DEVHACK_DATA"):
        return os.environ["DEVHACK_DATA"]
    return str(tmp_path_factory.mktemp("flaxlm_data"))


def load_config(name: str):
    """configs/<name>.py's get_config(), as the CLI would load it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"configs_{name}", REPO / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()
