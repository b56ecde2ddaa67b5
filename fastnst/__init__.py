"""fastnst: fast neural style transfer.

Johnson-style feed-forward networks trained with the Gatys perceptual loss, the Gatys
optimizer as reference, and ONNX export for one-pass stylization.

The Python API (what the command line calls):

    from fastnst import AnyStyle, Stylizer, stylize_video, list_models, train
    Stylizer("starry_night")(image, strength=1.0, preserve_color=False)  # PIL image or array in, same out
    AnyStyle("any_painting.jpg")(image)              # any style image, no training for it
    stylize_video("in.mp4", "out.mp4", "starry_night")
    list_models()                                   # the shipped models
    train("starry_night.jpg", data="photos/", steps=300)   # needs fastnst[train]

Conventions used everywhere in the package: images are float32, RGB, NCHW, values in [0, 1].
Only the loss network converts to its own input convention.
"""

__version__ = "0.1.0"

# Imported on first use, so that `import fastnst` and the command line start fast and the light
# install (no torch) can import what it runs.
_API = {"Stylizer": "fastnst.inference", "AnyStyle": "fastnst.anystyle", "stylize_video": "fastnst.video",
        "list_models": "fastnst.modelfile",
        "train": "fastnst.training", "UserError": "fastnst.errors"}
__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'fastnst' has no attribute {name!r}")
