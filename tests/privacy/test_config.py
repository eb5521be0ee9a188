import math
import warnings

import pytest

from meshfl.config.errors import ConfigError
from meshfl.privacy import DPConfig


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": 0}, "'epsilon'.*greater than 0"),
        ({"epsilon": math.inf}, "'epsilon'.*finite.*privacy=None"),
        ({"epsilon": 1, "delta": 1.0}, "'delta'.*less than 1"),
        ({"epsilon": 1, "unit": "user"}, "'unit'.*'sample' or 'msp'"),
        ({"epsilon": 1, "max_grad_norm": -1}, "'max_grad_norm'"),
        ({"epsilon": 1, "accountant": "gdp"}, "'accountant'"),
    ],
)
def test_bad_values_are_named(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DPConfig(**kwargs)


def test_delta_not_below_one_over_records_warns():
    with pytest.warns(UserWarning, match="not below 1/records"):
        DPConfig(epsilon=1, delta=0.01).check_records(500)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DPConfig(epsilon=1, delta=1e-5).check_records(500)
