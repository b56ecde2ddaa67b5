import pytest
import torch

from fastnst.errors import UserError
from fastnst.lossnet import VGGFeatures, bundled_weights_path, layer_names


def test_layer_names_follow_torchvision_indices():
    names = layer_names("vgg19")
    assert names[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert len(names) == 37 and names[-1] == "pool5"  # torchvision's vgg19.features has 37 modules
    assert len(layer_names("vgg16")) == 31 and "relu4_3" in layer_names("vgg16")


def test_bundled_vgg19_shapes_and_truncation():
    net = VGGFeatures("vgg19", "bundled", ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"])
    assert net.names[-1] == "relu5_1"  # truncated after the deepest layer needed
    x = torch.rand(2, 3, 64, 48)
    out = net(x)
    expected = {"relu1_1": (64, 64, 48), "relu2_1": (128, 32, 24), "relu3_1": (256, 16, 12),
                "relu4_1": (512, 8, 6), "relu5_1": (512, 4, 3)}
    for name, shape in expected.items():
        assert out[name].shape == (2, *shape)
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training  # stays in eval mode


def test_bundled_first_layer_matches_the_file():
    raw = torch.load(bundled_weights_path(), map_location="cpu", weights_only=True)
    w = raw["block1_conv1_W_table"][raw["block1_conv1_W_q"].long()]
    net = VGGFeatures("vgg19", "bundled", ["relu1_1"])
    assert torch.equal(net.body.conv1_1.weight, w.float())
    assert torch.equal(net.body.conv1_1.bias, raw["block1_conv1_b"].float())
    assert w.shape == (64, 3, 3, 3)


def test_caffe_input_convention():
    """An RGB [0,1] image reaches conv1_1 as BGR 0-255 minus the Caffe mean."""
    net = VGGFeatures("vgg19", "bundled", ["conv1_1"])
    x = torch.rand(1, 3, 8, 8)
    caffe = x.flip(1) * 255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    expected = torch.nn.functional.conv2d(caffe, net.body.conv1_1.weight, net.body.conv1_1.bias, padding=1)
    torch.testing.assert_close(net(x)["conv1_1"], expected, rtol=1e-4, atol=1e-3)


def test_local_state_dict_in_torchvision_layout(tmp_path):
    torch.manual_seed(0)
    state = {"features.0.weight": torch.randn(64, 3, 3, 3), "features.0.bias": torch.randn(64),
             "features.2.weight": torch.randn(64, 64, 3, 3), "features.2.bias": torch.randn(64),
             "classifier.0.weight": torch.randn(2, 2)}
    path = tmp_path / "vgg.pth"
    torch.save(state, path)
    net = VGGFeatures("vgg16", str(path), ["relu1_2"])
    assert torch.equal(net.body.conv1_2.weight, state["features.2.weight"])
    assert net.convention == "torchvision"


def test_bad_layer_and_weights_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no layer 'relu9_9'"):
        VGGFeatures("vgg19", "bundled", ["relu9_9"])
    with pytest.raises(UserError, match="bundled weights are VGG19"):
        VGGFeatures("vgg16", "bundled", ["relu1_2"])
    with pytest.raises(UserError, match="no such VGG weights file"):
        VGGFeatures("vgg19", str(tmp_path / "missing.pth"), ["relu1_1"])
    junk = tmp_path / "junk.pth"
    junk.write_text("not a state dict")
    with pytest.raises(UserError, match="not a readable"):
        VGGFeatures("vgg19", str(junk), ["relu1_1"])


def test_forward_stops_at_the_deepest_requested_layer():
    net = VGGFeatures("vgg19", "bundled", ["relu2_2", "relu5_1"])
    x = torch.rand(1, 3, 32, 32)
    full = net(x)
    part = net(x, ["relu2_2"])
    assert list(part) == ["relu2_2"] and torch.equal(part["relu2_2"], full["relu2_2"])
