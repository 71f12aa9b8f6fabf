"""The musicenv environments. Importing this package imports numba."""

from musicenv.envs.counterpoint import CounterpointEnv, CounterpointVectorEnv
from musicenv.envs.harmonization import HarmonizationEnv, HarmonizationVectorEnv
from musicenv.envs.music_composition import MusicCompositionEnv, MusicCompositionVectorEnv

__all__ = ["MusicCompositionEnv", "MusicCompositionVectorEnv", "CounterpointEnv", "CounterpointVectorEnv",
           "HarmonizationEnv", "HarmonizationVectorEnv"]
