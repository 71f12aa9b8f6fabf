"""Reward functions for musicenv: the protocol, registry, composite and catalogue.

>>> import rewards
>>> reward = rewards.make({"in_key": 1.0, "motif": 0.5})
>>> sorted(rewards.available())[:3]
['cadence', 'chord_tone_on_strong_beat', 'consonance']

See :mod:`rewards.registry` for every spec form, :mod:`rewards.base` for the term
protocol, :mod:`rewards.rl_tuner` and :mod:`rewards.harmony` for the catalogue.
"""

from rewards import counterpoint, harmonization, harmony, jam, ngram, rl_tuner  # noqa: F401  (registers the built-in terms)
from rewards.base import CompositeReward, KernelTerm, RewardSpecError, RewardTerm
from rewards.registry import LAZY_TERMS, PRESETS, available, get, make, register, register_preset
from rewards.scoring import score, score_steps, score_steps_batch

__all__ = ["RewardTerm", "KernelTerm", "CompositeReward", "RewardSpecError", "make", "available", "get",
           "register", "register_preset", "PRESETS", "LAZY_TERMS", "score", "score_steps", "score_steps_batch",
           "RL_TUNER_RULES", "CHORD_TERMS"]

#: The nine RL Tuner rules, in the paper's order.
RL_TUNER_RULES = ("in_key", "tonic", "no_repetition", "low_autocorrelation", "motif", "repeated_motif",
                  "preferred_intervals", "resolve_leaps", "unique_extrema")
#: Chord-, key- and form-aware terms.
CHORD_TERMS = ("chord_tone_on_strong_beat", "consonance", "cadence", "stepwise_motion",
               "leading_tone_resolution", "range", "rhythmic_variety", "rest_ratio")

# The RL Tuner's r_MT: the nine rules, unweighted (their values already carry the
# paper's scale). The paper's c = 0.5 multiplies this by 2 next to log p (see "rl_tuner").
register_preset("rl_tuner_theory", {name: 1.0 for name in RL_TUNER_RULES})

# Everything, with the chord-aware terms scaled to matter next to the RL Tuner rules
# (whose motif bonuses reach 3-9 per step and repetition costs 100).
# The motif term is halved: it pays 3-4.5 at almost every step of a busy random line,
# which would otherwise outweigh everything the other terms say about such a line.
register_preset("theory", {
    **{name: 1.0 for name in RL_TUNER_RULES},
    "motif": 0.5,
    "chord_tone_on_strong_beat": 3.0,
    "consonance": 2.0,
    "cadence": 6.0,
    "stepwise_motion": 1.0,
    "leading_tone_resolution": 2.0,
    "range": 3.0,
    "rhythmic_variety": 6.0,
    "rest_ratio": 4.0,
})
LAZY_TERMS["discriminator"] = "agents.gan:DiscriminatorReward"
LAZY_TERMS["prior_log_likelihood"] = "agents.note_rnn:PriorLogLikelihood"
LAZY_TERMS["preference"] = "musicenv.study.reward:PreferenceReward"
# The RL Tuner's reward (Jaques et al. 2017, eq. 3): r = log p(a|s) + r_MT / c with the paper's c = 0.5.
# Its log p is the token-only Bach prior ("bach"), so the reproduction stays comparable with the paper.
register_preset("rl_tuner", {"rl_tuner_theory": 2.0, "prior_log_likelihood": {"weight": 1.0, "checkpoint": "bach"}})
# Two-voice species counterpoint (Counterpoint-v0): the cadence and parallels weigh most,
# as in a teacher's marking; contrary motion is a mild preference.
register_preset("counterpoint", {
    "vertical_consonance": 2.0,
    "parallel_perfects": 3.0,
    "direct_perfects": 1.0,
    "contrary_motion": 1.0,
    "voice_crossing": 2.0,
    "melodic_leaps": 1.0,
    "single_climax": 2.0,
    "proper_cadence": 4.0,
})
# Harmonization-v0: the cadence decides a phrase; chord tones under the melody come next.
register_preset("harmonization", {
    "melody_chord_tone": 2.0,
    "functional_progression": 1.0,
    "harmonic_cadence": 4.0,
    "corpus_agreement": 1.0,
})
# Jam (musicenv.jam_v0, JamChords-v0, JamMelody-v0): each agent's default reward. The pair
# terms score both parts together (the same value in either reward); the chords agent adds
# progression terms, the melody agent the melody's own `theory`.
register_preset("jam_chords", {
    "jam_note_in_chord": 1.0,
    "jam_onset_alignment": 0.5,
    "jam_harmonic_rhythm": 1.0,
    "jam_cadence_together": 4.0,
    "jam_diatonic_chord": 0.25,
    "jam_functional_progression": 0.25,
})
register_preset("jam_melody", {
    "theory": 1.0,
    "jam_note_in_chord": 2.0,
    "jam_onset_alignment": 0.5,
    "jam_cadence_together": 4.0,
})
