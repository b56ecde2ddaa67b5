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


def setting(default, doc: str):
    """A dataclass field with its documentation: the command line's help and the API's reference."""
    if isinstance(default, dict):
        return field(default_factory=dict, metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


@dataclass(kw_only=True)
class LossConfig:
    """What J is made of: the loss network, its layers and each term's weight. A model's metadata
    keeps it once (its "loss" entry); `Objective.from_config` builds the objective from it, for
    training, the optimizer and comparisons alike."""
    loss_net: str = setting("vgg19", "Loss network: vgg19 or vgg16.")
    vgg_weights: str = setting("bundled", "Loss network weights: bundled (VGG19, offline), torchvision "
                                          "(downloaded) or a state-dict file.")
    pooling: str = setting("max", "The loss network's pooling: max, or avg (Gatys et al.'s variant).")
    content_weight: float = setting(1.0, "Weight of the content loss.")
    style_weight: float = setting(1.0, "Weight of the style loss.")
    tv_weight: float = setting(1.0, "Weight of the total-variation loss.")
    content_layers: dict[str, float] = setting({}, "Content layers and weights, e.g. 'relu2_2:1e-5' (empty: the "
                                                   "loss network's defaults, see docs/design.md).")
    style_layers: dict[str, float] = setting({}, "Style layers and weights, e.g. 'relu1_1:1.5e-3,relu2_1:1.5e-5' "
                                                 "(empty: the loss network's defaults).")

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


# The terms whose sum is J, the objective. A training record has more ("teacher", "temporal") and a
# "total" that includes them: they shape training but are not J.
J_TERMS = ("content", "style", "tv")

# `stylize --temporal`'s default for videos: chosen by measurement (README, "Video without flicker").
DEFAULT_TEMPORAL = 0.5

DEFAULT_STEPS = 40_000  # 160k images at batch 4: Johnson 2016's budget (two epochs of COCO)
DEFAULT_DATA = "hf:detection-datasets/coco:train"
# What may differ between a run and its resumption: its length and how it ends (the lr decay),
# where it writes, how it runs.
RESUMABLE_OVERRIDES = ("steps", "epochs", "lr_decay", "out", "device", "workers", "checkpoint_every",
                       "sample_every", "log_every", "compile")


@dataclass(kw_only=True)
class TrainConfig(LossConfig):
    """Everything a training run needs: the loss settings (LossConfig's fields) and these."""
    style: str | list[str] = setting("", "Style image, or a folder of them; several train one network per style "
                                         "in one run.")
    style_weight: float | list[float] = setting(1.0, "Weight of the style loss: one for all styles, or one per "
                                                     "style.")
    data: str = setting(DEFAULT_DATA, "Training images: a folder (searched recursively), hf:NAME[:SPLIT], or a "
                                      "pack file from `fastnst pack` (kept on the GPU; on CUDA a folder is too).")
    out: str = setting("", "Output folder (empty: runs/<style name>; with several styles runs/<name>+<name>..., "
                           "a subfolder per style).")
    steps: int | None = setting(None, f"Training steps (none: {DEFAULT_STEPS} unless epochs).")
    epochs: int | None = setting(None, "Passes over the data (instead of steps).")
    batch_size: int = setting(4, "Images per step and process (under torchrun the global batch is N processes "
                                 "x this).")
    image_size: int = setting(256, "Side of the square training crops.")
    style_size: int = setting(512, "Long side the style image is resized to.")
    lr: float = setting(1e-3, "Adam learning rate.")
    lr_decay: float = setting(0.0, "Let the learning rate fall linearly to 0 over this last fraction of the "
                                   "steps (0: constant; needs a known number of steps).")
    width: int = setting(32, "Channels of the network's first layer.")
    blocks: int = setting(5, "Residual blocks of the network.")
    device: str = setting("auto", "auto, cpu or cuda: auto picks CUDA when available.")
    checkpoint_every: int = setting(1000, "Write a checkpoint every N steps (0: only at the end).")
    sample_every: int = setting(500, "Write sample images every N steps (0: only at the end).")
    log_every: int = setting(10, "Read and log the losses every N steps.")
    workers: int = setting(4, "Threads decoding training images.")
    seed: int = setting(0, "Random seed.")
    compile: bool = setting(True, "torch.compile the training step on CUDA (about a minute to start).")
    teacher: str = setting("", "A teacher folder (`fastnst optimize --content DIR --out TEACHER`): also pull "
                               "outputs towards its targets.")
    teacher_weight: float = setting(0.0, "Weight of the teacher's pixel MSE loss.")
    temporal_weight: float = setting(0.0, "Weight of the stability term against video flicker (Wang et al. 2020): "
                                          "the output of a slightly moved, noisy batch against the output moved "
                                          "the same way (0: off).")
    init_from: str | list[str] = setting("", "Start from a trained model's network (a .safetensors file or a "
                                             "shipped name), one per style: to continue or fine-tune it. Adam and "
                                             "the data order start afresh.")

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


# Universal style transfer (Li et al. 2017): the loss network's levels whose features are whitened
# and re-coloured, coarse to fine at run time, each with a decoder back to pixels.
ANY_STYLE_LEVELS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
# Eigenvalues of a feature covariance under this fraction of the largest are noise: dropped, not inverted.
EIGEN_FLOOR = 1e-5
# `stylize --style`'s defaults of --style-strength and --style-depth: the lowest J on 3 photos x 4 styles
# that neither the decoders nor the benchmark's pairs use (docs/any-style.md).
DEFAULT_STYLE_STRENGTH, DEFAULT_STYLE_DEPTH = 0.6, 3


@dataclass(kw_only=True)
class DecoderConfig:
    """A run of `fastnst train-decoders`: decoders that invert the loss network's features of photos."""
    data: str = setting(DEFAULT_DATA, "Training photos: a folder (searched recursively), hf:NAME[:SPLIT] or a pack "
                                      "file from `fastnst pack`.")
    out: str = setting("runs/decoders", "Output folder.")
    steps: int = setting(20_000, "Training steps.")
    batch_size: int = setting(8, "Images per step.")
    image_size: int = setting(256, "Side of the square training crops.")
    lr: float = setting(1e-4, "Adam learning rate.")
    lr_decay: float = setting(0.0, "Let the learning rate fall linearly over this last fraction of the steps.")
    width: float = setting(1.0, "Channels of each decoder layer as a fraction of the loss network's (1: Li et "
                                "al.'s mirror of VGG19; 0.5 is 4x cheaper).")
    feature_weight: float = setting(1.0, "Weight of the feature reconstruction loss (squared error of the "
                                         "output's features, relative to the input's squared features) beside "
                                         "the pixel loss (weight 1).")
    transfer_weight: float = setting(0.0, "Weight of the transfer loss: each photo's features whitened and "
                                          "re-coloured with another photo's, decoded, should have those features "
                                          "(relative squared error), as stylize --style needs.")
    loss_net: str = setting("vgg19", "The loss network whose features are inverted (vgg19).")
    vgg_weights: str = setting("bundled", "Its weights: bundled (offline), torchvision (downloaded) or a "
                                          "state-dict file.")
    device: str = setting("auto", "auto, cpu or cuda.")
    checkpoint_every: int = setting(500, "Write a checkpoint every N steps (0: only at the end).")
    log_every: int = setting(10, "Log the losses every N steps.")
    workers: int = setting(4, "Threads decoding training images.")
    seed: int = setting(0, "Random seed.")
    init_from: str = setting("", "Start from trained decoders (a decoders .safetensors file): to continue or "
                                 "fine-tune them, for example with another --feature-weight. Adam and the data "
                                 "order start afresh.")


# What may differ between a decoder run and its resumption.
DECODER_RESUMABLE = ("steps", "lr_decay", "out", "device", "workers", "checkpoint_every", "log_every")
