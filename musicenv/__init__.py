"""musicenv: Gymnasium environments in which reinforcement-learning agents compose music.

``import musicenv`` registers the environments and does nothing else (no numba, no
torch, no corpus I/O)::

    import gymnasium as gym
    import musicenv  # noqa: F401

    env = gym.make("MusicComposition-v0", reward="theory")
"""

from gymnasium.envs.registration import register as _register

__version__ = "0.1.0"

# All registrations live here, each with its entry point as a string so nothing heavy
# is imported until an environment is made.
_register(
    id="MusicComposition-v0",
    entry_point="musicenv.envs.music_composition:MusicCompositionEnv",
    vector_entry_point="musicenv.envs.music_composition:MusicCompositionVectorEnv",
)

_register(
    id="Counterpoint-v0",
    entry_point="musicenv.envs.counterpoint:CounterpointEnv",
    vector_entry_point="musicenv.envs.counterpoint:CounterpointVectorEnv",
)

_register(
    id="Harmonization-v0",
    entry_point="musicenv.envs.harmonization:HarmonizationEnv",
    vector_entry_point="musicenv.envs.harmonization:HarmonizationVectorEnv",
)

# Jam: the two single-agent views of the PettingZoo duet musicenv.jam_v0.
_register(
    id="JamChords-v0",
    entry_point="musicenv.envs.jam:JamChordsEnv",
    vector_entry_point="musicenv.envs.jam:JamChordsVectorEnv",
)

_register(
    id="JamMelody-v0",
    entry_point="musicenv.envs.jam:JamMelodyEnv",
    vector_entry_point="musicenv.envs.jam:JamMelodyVectorEnv",
)

#: Every environment id this package registers.
ENV_IDS = ("MusicComposition-v0", "Counterpoint-v0", "Harmonization-v0", "JamChords-v0", "JamMelody-v0")
