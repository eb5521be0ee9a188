import numpy as np
import pytest
import torch

from meshfl.config.errors import InvalidUpdateError
from meshfl.models.flat import flat_size, get_flat, set_flat
from meshfl.models.heads import MultiTaskHead


def test_flat_roundtrip_and_frozen_parameters_excluded():
    head = MultiTaskHead(8, (3, 2), hidden=4)
    head.body[0].bias.requires_grad_(False)
    vector = get_flat(head)
    assert vector.shape == (flat_size(head),) == (8 * 4 + 4 * 3 + 3 + 4 * 2 + 2,)
    other = MultiTaskHead(8, (3, 2), hidden=4)
    other.body[0].bias.requires_grad_(False)
    set_flat(other, vector)
    np.testing.assert_array_equal(get_flat(other), vector)
    # the frozen bias did not travel: outputs agree only once it is shared too
    x = torch.randn(5, 8)
    head.eval(), other.eval()
    assert not torch.allclose(head(x)[0], other(x)[0])
    with torch.no_grad():
        other.body[0].bias.copy_(head.body[0].bias)
    x = torch.randn(5, 8)
    head.eval(), other.eval()
    for a, b in zip(head(x), other(x), strict=True):
        assert torch.allclose(a, b)


def test_wrong_length_names_expected_size():
    head = MultiTaskHead(8, (3,), hidden=0)
    with pytest.raises(InvalidUpdateError, match="27 values"):
        set_flat(head, np.zeros(5))
