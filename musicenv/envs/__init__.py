"""The musicenv environments. Importing this package imports numba."""

from musicenv.envs.music_composition import MusicCompositionEnv, MusicCompositionVectorEnv

__all__ = ["MusicCompositionEnv", "MusicCompositionVectorEnv"]
