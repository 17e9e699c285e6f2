"""Every YAML of every config group composes with Hydra's compose API and builds;
bad values are refused with one message generated from the constraint tables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from implicit_bias import params as P
from implicit_bias.build import GROUPS, TOP_LEVEL, build
from conftest import CONF, build_config, compose_config

OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]


def test_every_registered_option_has_a_yaml_and_back():
    for group, registry in GROUPS.items():
        assert {p.stem for p in (CONF / group).glob("*.yaml")} == set(registry), group


@pytest.fixture
def system_file(tmp_path):
    path = tmp_path / "system.npz"
    np.savez(path, A=np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0]]), b=np.array([1.0, 1.0]))
    return path


@pytest.mark.parametrize("group, option", OPTIONS)
def test_every_option_composes_and_builds(group, option, system_file):
    extra = [f"dataset.path={system_file}"] if option == "from_file" else []
    experiment = build_config([f"{group}={option}", *extra])
    assert getattr(experiment, group).name == option


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_experiment_composes_and_builds(experiment):
    config = compose_config([f"experiment={experiment}"])
    if config.get("study") is not None:  # a study runs its own module, which validates its own block
        from implicit_bias.studies import STUDIES

        assert config["study"] in STUDIES and config["study"] in config, config["study"]
        return
    build_config([f"experiment={experiment}"])


def test_an_experiments_values_win_over_the_primary_config_and_the_command_line_over_both():
    assert compose_config(["experiment=eps_sweep"])["max_steps"] == 200_000  # config.yaml says 100 000
    assert compose_config(["experiment=homework"])["figure"] is False
    assert compose_config(["experiment=eps_sweep", "max_steps=7"])["max_steps"] == 7


def test_defaults():
    config = compose_config()
    assert config["dataset"]["name"] == "single_equation"
    assert config["optimizer"]["name"] == "sgd"
    assert config["schedule"]["name"] == "constant"


@pytest.mark.parametrize("optimizer, schedule", [
    ("sgd", "constant"), ("rescaled_sgd", "constant"), ("sign_sgd", "exponential"), ("epoch_rms_adam", "exponential"),
])
def test_each_optimizer_brings_its_default_schedule_and_the_command_line_wins(optimizer, schedule):
    assert compose_config([f"optimizer={optimizer}"])["schedule"]["name"] == schedule
    assert compose_config([f"optimizer={optimizer}", "schedule=cosine"])["schedule"]["name"] == "cosine"
    assert compose_config([f"optimizer={optimizer}", "schedule.lr=0.05"])["schedule"]["lr"] == 0.05


def bad_values(constraint):
    """Values each constraint must refuse."""
    if isinstance(constraint, P.Boolean):
        return [1, "yes"]
    if isinstance(constraint, P.Matrix):
        return [[], [[1.0, 2.0], [3.0]], "x", [[math.nan, 1.0]], [1.0, 2.0]]
    if isinstance(constraint, P.Text):
        return ["", 3, None]
    if isinstance(constraint, P.Choice):
        return ["nope", 3, None]
    if isinstance(constraint, P.Vector):
        return [[], [1.0, math.nan], "abc", [True]]
    if isinstance(constraint, P.Integer):
        return [constraint.low - 1, 1.5, "3"]
    if isinstance(constraint, P.FiniteReal):
        return [math.inf, math.nan, "x"]
    if isinstance(constraint, P.Real):
        values = [math.nan, "abc", True]
        if constraint.low > -math.inf:
            values.append(constraint.low - 1.0)
            if constraint.closed in ("right", "neither"):
                values.append(constraint.low)
        if constraint.high < math.inf:
            values.append(constraint.high + 1.0)
        return values
    raise AssertionError(f"no bad values for {constraint!r}")


CASES = [
    (group, name, key, value)
    for group, registry in GROUPS.items()
    for name, spec in registry.items()
    for key, constraint in spec.params.items()
    for value in bad_values(constraint)
] + [("top", "", key, value) for key, constraint in TOP_LEVEL.items() for value in bad_values(constraint)]


@pytest.mark.parametrize("group, name, key, value", CASES, ids=[f"{c[0]}.{c[1]}.{c[2]}={c[3]!r}" for c in CASES])
def test_bad_values_are_refused_with_a_message_naming_them(group, name, key, value, system_file):
    overrides = [] if group == "top" else [f"{group}={name}"]
    if name == "from_file":
        overrides.append(f"dataset.path={system_file}")
    config = compose_config(overrides)
    (config if group == "top" else config[group])[key] = value
    with pytest.raises(P.ConfigError) as info:
        build(config)
    message = str(info.value)
    assert f"'{key}'" in message
    assert "must be" in message and "Got" in message


def test_unknown_option_and_unknown_key_messages_list_the_allowed_values():
    config = compose_config()
    config["optimizer"]["name"] = "adamw"
    with pytest.raises(P.ConfigError, match="Unknown optimizer 'adamw'. Allowed values: .*sgd"):
        build(config)
    config = compose_config()
    config["schedule"]["lrr"] = 0.1
    with pytest.raises(P.ConfigError, match="Unknown parameter 'lrr' for schedule 'constant'. Allowed parameters: 'lr'"):
        build(config)


def test_dimension_mismatch_is_refused():
    with pytest.raises(P.ConfigError, match="'theta0'.*length 3.*Got length 2"):
        build_config(["dataset.theta0=[0,0]"])


def test_built_values_are_float64():
    experiment = build_config()
    assert experiment.problem.A.dtype == np.float64 and experiment.problem.theta0.dtype == np.float64
    assert isinstance(experiment.schedule.params["lr"], float)
