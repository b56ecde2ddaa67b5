import pytest
import torch

from fastnst.network import TransformerNet


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (15, 17), (33, 65), (64, 64), (101, 37)])
def test_output_has_input_size(size):
    net = TransformerNet(width=8, blocks=1)
    for mode in (True, False):
        net.train(mode)
        y = net(torch.rand(2, 3, *size))
        assert y.shape == (2, 3, *size)


def test_output_is_in_unit_range_in_both_modes():
    torch.manual_seed(0)
    net = TransformerNet(width=8, blocks=1)
    x = torch.rand(1, 3, 32, 32) * 4 - 2  # even for inputs far outside [0, 1]
    for mode in (True, False):
        net.train(mode)
        y = net(x)
        assert y.min() >= 0 and y.max() <= 1


def test_width_and_blocks_are_configurable():
    small, big = TransformerNet(8, 1), TransformerNet(32, 5)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(small) < n(big)
    assert big.config() == {"width": 32, "blocks": 5}
    assert len(big.residuals) == 5
    # instance norm with affine parameters, reflection padding, no transposed convolutions
    mods = list(big.modules())
    assert any(isinstance(m, torch.nn.InstanceNorm2d) and m.affine for m in mods)
    assert any(isinstance(m, torch.nn.ReflectionPad2d) for m in mods)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in mods)
