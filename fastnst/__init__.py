"""fastnst: fast neural style transfer.

Johnson-style feed-forward networks trained with the Gatys perceptual loss, the Gatys
optimizer as reference, and ONNX export for one-pass stylization.

Conventions used everywhere in the package: images are float32 tensors, RGB, NCHW, values
in [0, 1]. Only the loss network converts to its own input convention.
"""

__version__ = "0.1.0"
