import pytest
from pydantic import Field, ValidationError

from meshfl.config import ConfigError, MeshflConfig, MeshflError


class DemoConfig(MeshflConfig):
    epsilon: float = Field(1.0, gt=0)
    unit: str = "sample"


def test_out_of_range_value_names_parameter_rule_and_value():
    with pytest.raises(ConfigError) as info:
        DemoConfig(epsilon=-1.0)
    message = str(info.value)
    assert "'epsilon'" in message and "DemoConfig" in message
    assert "greater than 0" in message and "-1.0" in message


def test_unknown_parameter_lists_valid_ones():
    with pytest.raises(
        ConfigError, match=r"'epsilonn' is not a parameter of DemoConfig.*epsilon, unit"
    ):
        DemoConfig(epsilonn=1.0)


def test_config_error_is_meshfl_and_value_error():
    with pytest.raises(MeshflError):
        DemoConfig(epsilon=0)
    with pytest.raises(ValueError):
        DemoConfig.model_validate({"epsilon": "abc"})


def test_configs_are_frozen():
    config = DemoConfig()
    with pytest.raises(ValidationError):
        config.epsilon = 2.0  # type: ignore[misc]
