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


def _own_ids() -> tuple[str, ...]:
    from gymnasium.envs.registration import registry

    def module(entry_point) -> str:
        return entry_point if isinstance(entry_point, str) else getattr(entry_point, "__module__", "")

    return tuple(spec.id for spec in registry.values()
                 if module(spec.entry_point).replace(":", ".").split(".")[0] == __name__)


#: Every environment id this package registers, in registration order (read from
#: Gymnasium's registry, so a new registration above needs no second edit).
ENV_IDS = _own_ids()
