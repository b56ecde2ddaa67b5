"""The settings of the objective and of a training run, declared once: the command line's
defaults, the Python API's, and what checkpoints and model files record. No torch here, so the
light install's command line can read them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields

from fastnst.errors import UserError

# Defaults, chosen by looking at results on the bundled VGG19 (see README, "Loss defaults").
# Shallow and deep layers have Gram matrices of very different sizes (the squared Gram error
# between a photo and Starry Night runs from ~1e2 at relu5_1 to ~1e6 at relu4_1), so each
# layer's weight is about 1 / that error: every layer then pulls about equally, and
# content_weight = style_weight = 1 balances content and style.
DEFAULT_LAYERS = {
    "vgg19": {"content": {"relu2_2": 1e-5},
              "style": {"relu1_1": 1.5e-3, "relu2_1": 1.5e-5, "relu3_1": 3e-5, "relu4_1": 8e-7, "relu5_1": 8e-3}},
    # Johnson 2016's layers. Untuned: same per-layer scale as the VGG19 layers of the same block.
    "vgg16": {"content": {"relu2_2": 1e-5},
              "style": {"relu1_2": 1.5e-3, "relu2_2": 1.5e-5, "relu3_3": 3e-5, "relu4_3": 8e-7}},
}
# torchvision's weights take (x - mean) / std instead of Caffe's 255 * x - mean: activations are
# about 255 * 0.226 = 57.7 times smaller, so squared feature errors scale by 57.7^2 and squared
# Gram errors by 57.7^4 (ReLU networks are nearly positively homogeneous).
TORCHVISION_FEATURE_RATIO = 255 * 0.226


def default_layer_weights(arch: str, convention: str = "caffe") -> tuple[dict[str, float], dict[str, float]]:
    """Default (content, style) layer weights for a loss network and its input convention."""
    d = DEFAULT_LAYERS[arch]
    k = TORCHVISION_FEATURE_RATIO if convention == "torchvision" else 1.0
    return ({l: w * k**2 for l, w in d["content"].items()},
            {l: w * k**4 for l, w in d["style"].items()})


def parse_layer_weights(spec: str) -> dict[str, float]:
    """'relu1_1:1,relu2_1:0.5' or 'relu2_2' -> {'relu1_1': 1.0, ...}."""
    out = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, w = item.partition(":")
        out[name.strip()] = float(w) if w else 1.0
    return out


@dataclass(kw_only=True)
class LossConfig:
    """What J is made of: the loss network, its layers and each term's weight. A model's metadata
    keeps it once (its "loss" entry); `Objective.from_config` builds the objective from it, for
    training, the optimizer and comparisons alike."""
    loss_net: str = "vgg19"
    vgg_weights: str = "bundled"  # bundled (VGG19, offline), torchvision, or a state-dict file
    pooling: str = "max"  # avg: Gatys et al.'s variant
    content_weight: float = 1.0
    style_weight: float = 1.0
    tv_weight: float = 1.0
    content_layers: dict[str, float] = field(default_factory=dict)  # empty: the loss network's defaults
    style_layers: dict[str, float] = field(default_factory=dict)

    def loss_settings(self) -> dict:
        """This configuration's LossConfig fields alone (also of a subclass, such as TrainConfig)."""
        return {f.name: getattr(self, f.name) for f in fields(LossConfig)}

    def resolved(self) -> LossConfig:
        """The loss settings with the loss network's default layers filled in where none are given."""
        convention = "caffe" if self.vgg_weights == "bundled" else "torchvision"
        c, s = default_layer_weights(self.loss_net, convention)
        return LossConfig(**{**self.loss_settings(), "content_layers": dict(self.content_layers) or c,
                             "style_layers": dict(self.style_layers) or s})

    @classmethod
    def from_metadata(cls, meta: dict) -> LossConfig:
        """A model's loss settings (models made before the loss network moved into "loss" keep it in
        their "config")."""
        loss, cfg = meta["loss"], meta.get("config", {})
        return cls(**{f.name: loss.get(f.name, cfg.get(f.name, f.default)) for f in fields(cls)
                      if f.name in loss or f.name in cfg})


DEFAULT_STEPS = 40_000  # 160k images at batch 4: Johnson 2016's budget (two epochs of COCO)
DEFAULT_DATA = "hf:detection-datasets/coco:train"
# What may differ between a run and its resumption: its length and how it ends (the lr decay),
# where it writes, how it runs.
RESUMABLE_OVERRIDES = ("steps", "epochs", "lr_decay", "out", "device", "workers", "checkpoint_every",
                       "sample_every", "log_every", "compile")


@dataclass(kw_only=True)
class TrainConfig(LossConfig):
    """Everything a training run needs: the loss settings (LossConfig's fields) and these. One
    style image (a path), or several (a list: one network each, trained together); style_weight
    and init_from take one value for all styles or a list of one per style."""
    style: str | list[str]
    style_weight: float | list[float] = 1.0
    data: str = DEFAULT_DATA
    out: str = ""
    steps: int | None = None  # default: DEFAULT_STEPS unless epochs
    epochs: int | None = None
    batch_size: int = 4
    image_size: int = 256
    style_size: int = 512
    lr: float = 1e-3
    lr_decay: float = 0.0  # the last fraction of the steps over which lr falls linearly to 0 (0: constant)
    width: int = 32
    blocks: int = 5
    device: str = "auto"
    checkpoint_every: int = 1000
    sample_every: int = 500
    log_every: int = 10
    workers: int = 4
    seed: int = 0
    compile: bool = True  # torch.compile the step on CUDA (a minute of compiling, then faster)
    teacher: str = ""  # a folder of Gatys-optimizer targets (fastnst optimize --content DIR)
    teacher_weight: float = 0.0
    init_from: str | list[str] = ""  # start from this trained model's network (a continuation or a fine-tune)

    @property
    def styles(self) -> list[str]:
        return [self.style] if isinstance(self.style, str) else list(self.style)

    def per_style(self, name: str) -> list:
        """The value of a per-style setting for each style: one value for all, or one each."""
        value, n = getattr(self, name), len(self.styles)
        values = list(value) if isinstance(value, (list, tuple)) else [value] * n
        if len(values) != n:
            raise UserError(f"--{name.replace('_', '-')}: give one value, or one per style ({n}), not {len(values)}")
        return values

    def for_style(self, i: int) -> TrainConfig:
        """The configuration of style i alone."""
        return dataclasses.replace(self, style=self.styles[i], style_weight=self.per_style("style_weight")[i],
                                   init_from=self.per_style("init_from")[i])
