import copy

import pytest
import torch

from fastnst.config import LossConfig, default_layer_weights, parse_layer_weights
from fastnst.losses import Objective, content_loss, gram_matrix, style_loss, tv_loss


def test_gram_matrix_by_hand():
    # One image, two channels, 2x2 pixels: G[i,j] = sum_p F_i(p) F_j(p) / (C*H*W).
    f = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, 1.0]]]])
    g = gram_matrix(f)
    expected = torch.tensor([[1 + 4 + 9 + 16, 0 + 2 + 0 + 4], [6, 2]]) / (2 * 2 * 2)
    assert g.shape == (1, 2, 2)
    torch.testing.assert_close(g[0], expected)


def test_gram_is_float32_under_bf16_autocast():
    f = torch.randn(2, 4, 8, 8) * 100
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = gram_matrix(f.to(torch.bfloat16))
    assert g.dtype == torch.float32
    torch.testing.assert_close(g, gram_matrix(f.to(torch.bfloat16).float()))


def test_content_loss_is_weighted_feature_mse():
    a = {"relu2_2": torch.zeros(1, 2, 2, 2)}
    b = {"relu2_2": torch.full((1, 2, 2, 2), 3.0)}
    assert content_loss(a, b, {"relu2_2": 0.5}).item() == 0.5 * 9.0


def test_style_loss_against_hand_computed_grams():
    f = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, 1.0]]]])
    target = torch.zeros(1, 2, 2)
    g = torch.tensor([[30.0, 6.0], [6.0, 2.0]]) / 8
    expected = 2.0 * (g ** 2).mean()
    torch.testing.assert_close(style_loss({"relu1_1": f}, {"relu1_1": target}, {"relu1_1": 2.0}), expected)
    # The style target broadcasts over a batch.
    torch.testing.assert_close(style_loss({"relu1_1": f.repeat(3, 1, 1, 1)}, {"relu1_1": target},
                                          {"relu1_1": 2.0}), expected)


def test_tv_loss_by_hand():
    img = torch.zeros(1, 1, 2, 3)
    img[0, 0, 0, 1] = 1.0  # one bright pixel
    # vertical differences: 1 of 3 is 1 -> mean 1/3; horizontal: 2 of 4 are +-1 -> mean 1/2
    torch.testing.assert_close(tv_loss(img), torch.tensor(1 / 3 + 1 / 2))
    assert tv_loss(torch.ones(1, 3, 1, 1)).item() == 0.0  # a 1x1 image has no variation


def test_parse_layer_weights():
    assert parse_layer_weights("relu1_1:0.5, relu2_1") == {"relu1_1": 0.5, "relu2_1": 1.0}


def test_torchvision_convention_rescales_default_weights():
    c1, s1 = default_layer_weights("vgg19", "caffe")
    c2, s2 = default_layer_weights("vgg19", "torchvision")
    k = 255 * 0.226
    torch.testing.assert_close(torch.tensor(c2["relu2_2"] / c1["relu2_2"]), torch.tensor(k ** 2))
    torch.testing.assert_close(torch.tensor(s2["relu1_1"] / s1["relu1_1"]), torch.tensor(k ** 4))


class _IdentityNet(torch.nn.Module):
    """A stand-in loss network whose 'features' are the image itself, so J is checkable by hand."""

    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.ones(1))

    def forward(self, x, layers=None):
        feats = {"a": x, "b": x * 2}
        return {k: v for k, v in feats.items() if layers is None or k in layers}


def test_objective_adds_weighted_terms_by_hand():
    obj = Objective(_IdentityNet(), LossConfig(content_weight=2.0, style_weight=3.0, tv_weight=5.0, content_layers={"a": 1.0},
                                                style_layers={"b": 0.5}))
    style = torch.rand(1, 3, 4, 4)
    obj.set_style(style)
    y, x = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    terms = obj(y, x)
    c = 2.0 * ((y - x) ** 2).mean()
    s = 3.0 * 0.5 * ((gram_matrix(2 * y) - gram_matrix(2 * style)) ** 2).mean()
    t = 5.0 * tv_loss(y)
    torch.testing.assert_close(terms["content"], c)
    torch.testing.assert_close(terms["style"], s)
    torch.testing.assert_close(terms["tv"], t)
    torch.testing.assert_close(terms["total"], c + s + t)
    # forward_with_targets (the optimizer's path) gives the same J
    torch.testing.assert_close(obj.forward_with_targets(y, obj.content_targets(x))["total"], terms["total"])


def test_objective_gradient_flows_to_output_only():
    obj = Objective(_IdentityNet(), LossConfig(content_layers={"a": 1.0}, style_layers={"b": 1.0}))
    obj.set_style(torch.rand(1, 3, 4, 4))
    y = torch.rand(1, 3, 4, 4, requires_grad=True)
    x = torch.rand(1, 3, 4, 4, requires_grad=True)
    obj(y, x)["total"].backward()
    assert y.grad is not None and x.grad is None


# -- the GPU loop's changes give the same losses ---------------------------------------------------

def _losses_and_grad(objective, y, x):
    losses = objective(y, x)
    (grad,) = torch.autograd.grad(losses["total"], y)
    return {k: v.item() for k, v in losses.items()}, grad


def test_batched_content_forward_gives_the_same_losses_and_gradients(objective):
    torch.manual_seed(1)
    x, y = torch.rand(2, 3, 48, 64), torch.rand(2, 3, 48, 64, requires_grad=True)
    o = copy.deepcopy(objective)
    separate, g1 = _losses_and_grad(o, y, x)
    o.batched_content = True
    batched, g2 = _losses_and_grad(o, y, x)
    assert separate == pytest.approx(batched, rel=1e-5)
    assert (g1 - g2).abs().max() <= 1e-5 * g1.abs().max()


def test_channels_last_gives_the_same_losses_and_gradients(objective):
    torch.manual_seed(2)
    x, y = torch.rand(2, 3, 48, 48), torch.rand(2, 3, 48, 48)
    y1 = y.clone().requires_grad_()
    plain, g1 = _losses_and_grad(objective, y1, x)
    o = copy.deepcopy(objective).to(memory_format=torch.channels_last)
    y2 = y.contiguous(memory_format=torch.channels_last).requires_grad_()
    cl, g2 = _losses_and_grad(o, y2, x.contiguous(memory_format=torch.channels_last))
    assert plain == pytest.approx(cl, rel=1e-4)
    assert (g1 - g2).abs().max() <= 1e-4 * g1.abs().max()


def test_moving_the_objective_moves_its_style_targets(objective):
    moved = copy.deepcopy(objective).to(torch.float64)
    assert all(g.dtype == torch.float64 for g in moved.style_grams.values())

