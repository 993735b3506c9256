"""The search space: which transformer architectures exist (numpy only, no torch)."""

from search_space.arch import Arch, LayerArch
from search_space.encoding import encode, encode_many, feature_names
from search_space.errors import ElastiqError, InputError, RunFailed, SpaceError
from search_space.layer_choices import LayerChoices
from search_space.registry import MIXERS, SUPPORTED_BITS, register_mixer
from search_space.sampling import SAMPLE_MODES
from search_space.space import SearchSpace

__all__ = ["ElastiqError", "InputError", "RunFailed", "Arch", "LayerArch", "LayerChoices", "SearchSpace",
           "SpaceError", "encode", "encode_many", "feature_names", "MIXERS", "SUPPORTED_BITS",
           "register_mixer", "SAMPLE_MODES"]
