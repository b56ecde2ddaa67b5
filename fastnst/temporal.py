"""Temporal stability of stylized video: optical flow, warping, the warping error that measures
flicker, and the blend that removes it.

Frames are the package's images, 3 x H x W float32 RGB in [0, 1] (numpy: the light install runs
all of it); flows and masks are H x W (x 2).
Flow is OpenCV's DIS optical flow between consecutive input frames. `flow[y, x]` says where the
pixel (x, y) of the later frame was in the earlier one, so `warp(earlier, flow)` lines the
earlier frame up with the later. Where the flow fails or a pixel was hidden in the earlier frame
(forward-backward inconsistency, or the flow points outside the frame), the pixel is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastnst.config import DEFAULT_TEMPORAL

# Sundaram et al. 2010's forward-backward check, as used by Ruder et al. 2016 and Lai et al. 2018:
# a pixel is occluded where |f + b|^2 > CONSISTENCY_SCALE (|f|^2 + |b|^2) + CONSISTENCY_OFFSET.
CONSISTENCY_SCALE, CONSISTENCY_OFFSET = 0.01, 0.5
# A new shot: less than this fraction of the frame is traced back, or the traced input differs
# from the new frame by more than CUT_RESIDUAL (mean absolute difference on the [0, 1] scale).
CUT_VISIBLE_FRACTION, CUT_RESIDUAL = 0.5, 0.12
# A pixel whose input colour changed by more than this along its flow is not blended (lighting
# changes, flow errors): its previous output does not show the same thing.
BLEND_MAX_INPUT_CHANGE = 0.1
# Averaging two frames' strokes lowers their contrast, which the style loss sees (Gram matrices are
# second moments): the blend's fine detail (above a Gaussian of DETAIL_SIGMA px) is scaled back up
# to the local energy (over DETAIL_WINDOW px) of the frame's own stylization, by at most DETAIL_MAX_GAIN,
# and its colours are mapped to the same mean and covariance. Chosen by measurement (README, "Video
# without flicker"): a sharper split or no colour step cost more J for the same warping error.
DETAIL_SIGMA, DETAIL_WINDOW, DETAIL_MAX_GAIN = 1.0, 4.0, 3.0
BLEND_FLOW_PRESET = "fast"  # the blend's DIS flow (measure_flicker's is "medium")


def _cv2():
    try:
        import cv2
    except ImportError:
        from fastnst.errors import UserError

        raise UserError("optical flow needs OpenCV: pip install opencv-python-headless") from None
    return cv2


def gray(frame: np.ndarray) -> np.ndarray:
    """3 x H x W float RGB in [0, 1] -> H x W uint8 luma, what the flow is computed on."""
    y = frame[0] * 0.299 + frame[1] * 0.587 + frame[2] * 0.114
    return np.clip(y * 255.0 + 0.5, 0, 255).astype(np.uint8)


class Flow:
    """DIS optical flow (OpenCV): `flow(later, earlier)` -> H x W x 2 float32, where each pixel of
    `later` (uint8 luma) came from in `earlier`. preset: ultrafast, fast or medium."""

    def __init__(self, preset: str = "medium"):
        cv2 = _cv2()
        presets = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                   "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
        self.dis = cv2.DISOpticalFlow_create(presets[preset])

    def __call__(self, later: np.ndarray, earlier: np.ndarray) -> np.ndarray:
        return self.dis.calc(later, earlier, None)


def _coordinates(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each pixel's flow points: x and y maps (H x W float32)."""
    h, w = flow.shape[:2]
    fx, fy = _cv2().split(flow)
    return fx + np.arange(w, dtype=np.float32), fy + np.arange(h, dtype=np.float32)[:, None]


def _sample(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """An H x W (x C) float32 array sampled bilinearly at the maps x, y (borders replicated)."""
    cv2 = _cv2()
    return cv2.remap(image, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _channels_last(frame: np.ndarray) -> np.ndarray:
    """3 x H x W -> H x W x 3 float32 (no copy when its memory is already in that order)."""
    return np.ascontiguousarray(frame.transpose(1, 2, 0), dtype=np.float32)


def warp(frame: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """A frame (3 x H x W) moved along `flow`: the earlier frame lined up with the later one."""
    return _sample(_channels_last(frame), *_coordinates(flow)).transpose(2, 0, 1)


def visible(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """H x W bool: the pixels of the later frame that the `backward` flow (later -> earlier) traces
    to a visible pixel of the earlier frame, checked against the `forward` flow (earlier -> later)."""
    h, w = backward.shape[:2]
    x, y = _coordinates(backward)
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    bx, by = _cv2().split(backward)
    fx, fy = _cv2().split(_sample(forward, x, y))
    loop = (bx + fx) ** 2 + (by + fy) ** 2
    bound = CONSISTENCY_SCALE * (bx * bx + by * by + fx * fx + fy * fy) + CONSISTENCY_OFFSET
    return inside & (loop <= bound)


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of each channel of a C x H x W array."""
    cv2 = _cv2()
    return np.stack([cv2.GaussianBlur(c, (0, 0), sigma) for c in a])


def restore_texture(blended: np.ndarray, stylized: np.ndarray) -> np.ndarray:
    """`blended` with its fine detail brought back to the local energy of `stylized`'s, then its
    colours to the mean and covariance of `stylized`'s."""
    base, reference = _blur(blended, DETAIL_SIGMA), _blur(stylized, DETAIL_SIGMA)
    detail = blended - base
    energy = _blur((detail ** 2).sum(0, keepdims=True), DETAIL_WINDOW)[0]  # the blur is linear: channels summed first
    wanted = _blur(((stylized - reference) ** 2).sum(0, keepdims=True), DETAIL_WINDOW)[0]
    gain = np.sqrt((wanted + 1e-6) / (energy + 1e-6)).clip(1.0, DETAIL_MAX_GAIN)
    return match_colours(np.clip(base + detail * gain[None], 0.0, 1.0), stylized)


def _sqrtm(c: np.ndarray, power: float = 0.5) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return (v * np.clip(w, 1e-8, None) ** power) @ v.T


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean (3) and covariance (3 x 3, float64) of the columns of a 3 x N array, in one product."""
    x = x.astype(np.float64)
    mean = x.mean(1)
    return mean, (x @ x.T - x.shape[1] * np.outer(mean, mean)) / max(x.shape[1] - 1, 1)


def match_colours(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`image` mapped linearly to the colour mean and covariance of `reference` (the Monge-Kantorovich
    map between two Gaussians, Pitie and Kokaram 2007)."""
    a = image.reshape(3, -1)
    (ma, ca), (mb, cb) = _moments(a), _moments(reference.reshape(3, -1))
    root, inverse_root = _sqrtm(ca), _sqrtm(ca, -0.5)
    transform = inverse_root @ _sqrtm(root @ cb @ root) @ inverse_root
    out = transform.astype(np.float32) @ a + (mb - transform @ ma).astype(np.float32)[:, None]
    return np.clip(out.reshape(image.shape), 0.0, 1.0)


@dataclass
class Motion:
    """How the later of two input frames relates to the earlier: the flow back, and where it holds."""
    backward: np.ndarray
    mask: np.ndarray

    @classmethod
    def between(cls, earlier: np.ndarray, later: np.ndarray, flow: Flow) -> "Motion":
        """From two uint8 luma frames."""
        backward, forward = flows(earlier, later, flow)
        return cls(backward, visible(backward, forward))


def warping_error(earlier: np.ndarray, later: np.ndarray, motion: Motion) -> float:
    """Lai et al. 2018's warping error of one frame pair: the squared RGB distance between `later`
    and `earlier` warped onto it, averaged over the visible pixels (0 when none are)."""
    n = motion.mask.sum()
    if n == 0:
        return 0.0
    d = ((later - warp(earlier, motion.backward)) ** 2).sum(0)
    return float(d[motion.mask].sum() / n)


def measure_flicker(inputs, stylized) -> dict:
    """The warping error of a stylized video and of its input (the floor: what motion itself costs
    with this flow), from two iterables of the same frames. Raises ValueError on frames that do not
    pair up."""
    flow = Flow("medium")
    per_frame, previous, count = [], None, 0
    for count, pair in enumerate(_pairs(inputs, stylized), 1):
        frame, styled = pair
        if frame.shape != styled.shape:
            raise ValueError(f"frame {count} is {frame.shape[2]}x{frame.shape[1]} in the input but "
                             f"{styled.shape[2]}x{styled.shape[1]} stylized")
        luma = gray(frame)
        if previous is not None:
            motion = Motion.between(previous[0], luma, flow)
            per_frame.append({"frame": count, "warping_error": warping_error(previous[2], styled, motion),
                              "input_warping_error": warping_error(previous[1], frame, motion),
                              "visible_fraction": float(motion.mask.mean())})
        previous = (luma, frame, styled)
    if count < 2:
        raise ValueError(f"{count} frame{'s' * (count != 1)}: flicker needs at least two")
    return {"frames": count,
            "warping_error": float(np.mean([p["warping_error"] for p in per_frame])),
            "input_warping_error": float(np.mean([p["input_warping_error"] for p in per_frame])),
            "flow": "OpenCV DIS optical flow, preset medium, on luma; occlusion by forward-backward consistency",
            "per_frame": per_frame}


def _pairs(a, b):
    """zip that raises when one side ends first."""
    a, b, end = iter(a), iter(b), object()
    n = 0
    while True:
        x, y = next(a, end), next(b, end)
        if x is end and y is end:
            return
        if x is end or y is end:
            longer, shorter = ("stylized", "input") if x is end else ("input", "stylized")
            raise ValueError(f"the {longer} video has more frames than the {shorter} ({n})")
        n += 1
        yield x, y


@dataclass
class Link:
    """How a frame takes from the previous output: warped along `backward` (H x W x 2), by `weight`
    (H x W float32: the blend strength where the flow holds and the input kept its colour, else 0)."""
    backward: np.ndarray
    weight: np.ndarray


def flows(earlier: np.ndarray, later: np.ndarray, flow: Flow) -> tuple[np.ndarray, np.ndarray]:
    """The flows between two uint8 luma frames: backward (later -> earlier) and forward."""
    return flow(later, earlier), flow(earlier, later)


def link(earlier: np.ndarray, later: np.ndarray, strength: float, flow: Flow) -> Link | None:
    """From two consecutive input frames (3 x H x W) alone, how the later one's output takes from
    the earlier one's; None at a scene cut (most of the frame not traceable to the earlier one, or
    traced to different colours) or a change of size. Needs no output, so it runs ahead of the network."""
    if earlier.shape != later.shape:
        return None
    return link_along(earlier, later, *flows(gray(earlier), gray(later), flow), strength)


def link_along(earlier: np.ndarray, later: np.ndarray, backward: np.ndarray, forward: np.ndarray,
               strength: float) -> Link | None:
    """`link`, given the flows between the two frames."""
    mask = visible(backward, forward)
    cv2 = _cv2()
    warped = _sample(_channels_last(earlier), *_coordinates(backward))
    change = cv2.transform(cv2.absdiff(warped, _channels_last(later)), np.full((1, 3), 1 / 3, np.float32))
    traced = mask.mean()
    if traced < CUT_VISIBLE_FRACTION or (traced and change[mask].mean() > CUT_RESIDUAL):
        return None
    weight = (strength * (mask & (change < BLEND_MAX_INPUT_CHANGE))).astype(np.float32)
    return Link(backward, weight)


def follow(previous: np.ndarray, stylized: np.ndarray, link: Link) -> np.ndarray:
    """A frame's output: its stylization blended with the previous output warped along the link,
    its texture and colours restored to the stylization's."""
    return restore_texture(stylized + link.weight[None] * (warp(previous, link.backward) - stylized), stylized)


class TemporalBlend:
    """Stable stylization of a frame sequence (Ruder et al. 2016's idea, for a feed-forward network):
    each output frame is the stylized frame blended with the previous output warped along the
    input's flow, by `strength` (0: every frame on its own) where the flow holds. A scene cut (most
    of the frame not traceable to the last one) starts afresh. `blend(frame, stylized)` takes and
    returns frames in order; `apply(stylized, link)` does the same with the frame's link to the last
    one computed ahead (`link`, None for the first frame or a cut)."""

    def __init__(self, strength: float = DEFAULT_TEMPORAL):
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"temporal strength must be in [0, 1], got {strength}")
        self.strength = strength
        self.flow = Flow(BLEND_FLOW_PRESET) if strength > 0 else None
        self.previous_input: np.ndarray | None = None
        self.previous = None  # the last output
        self.cuts = 0

    def blend(self, frame: np.ndarray, stylized: np.ndarray) -> np.ndarray:
        if self.strength == 0:
            return stylized
        found = None if self.previous_input is None else link(self.previous_input, frame, self.strength, self.flow)
        self.previous_input = frame
        return self.apply(stylized, found)

    def apply(self, stylized, found: Link | None):
        if found is None:
            self.cuts += self.previous is not None
            out = stylized
        else:
            out = self.follow(self.previous, stylized, found)
        self.previous = out
        return out

    follow = staticmethod(follow)
