"""Token mixers, one module each (`base.Mixer` is what a module defines); importing this package
registers every one with the search space."""

from supernet.mixers import attention, conv, fourier, none  # noqa: F401 - each registers its definitions
from supernet.mixers.base import Mixer, MixerShape, mixer_of, offered, projection_shapes

__all__ = ["Mixer", "MixerShape", "mixer_of", "offered", "projection_shapes"]
