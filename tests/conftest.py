from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from hypothesis import settings as hypothesis_settings
from omegaconf import OmegaConf

from implicit_bias.build import build

# CI draws the same examples every run, so a red CI is reproducible; local runs explore.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
A_HOMEWORK = np.array([1.0, 0.1, 0.01])


def compose_config(overrides: list[str] = ()) -> dict:
    """The composed primary config as a plain dict, exactly as the command would see it."""
    with initialize_config_module(version_base="1.3", config_module="implicit_bias.conf"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def build_config(overrides: list[str] = ()):
    return build(compose_config(overrides))


def run_cli(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m implicit_bias ARGS`` in a subprocess, as a user would type it."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", MPLBACKEND="Agg")
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "implicit_bias", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture
def homework_a() -> np.ndarray:
    return A_HOMEWORK.copy()
