"""Reward functions for musicenv: the protocol, registry, composite and catalogue.

>>> import rewards
>>> reward = rewards.make({"in_key": 1.0, "motif": 0.5})
>>> sorted(rewards.available())[:3]
['cadence', 'chord_tone_on_strong_beat', 'consonance']

See :mod:`rewards.registry` for every spec form, :mod:`rewards.base` for the term
protocol, :mod:`rewards.rl_tuner` and :mod:`rewards.harmony` for the catalogue.
"""

from rewards import counterpoint, harmonization, harmony, jam, melody, ngram, rl_tuner  # noqa: F401  (registers the built-in terms)
from rewards.base import CompositeReward, KernelTerm, RewardSpecError, RewardTerm
from rewards.registry import LAZY_TERMS, PRESETS, available, get, make, register, register_preset
from rewards.scoring import score, score_steps, score_steps_batch

__all__ = ["RewardTerm", "KernelTerm", "CompositeReward", "RewardSpecError", "make", "available", "get",
           "register", "register_preset", "PRESETS", "LAZY_TERMS", "score", "score_steps", "score_steps_batch",
           "RL_TUNER_RULES", "CHORD_TERMS", "MELODY_TERMS"]

#: The nine RL Tuner rules, in the paper's order.
RL_TUNER_RULES = ("in_key", "tonic", "no_repetition", "low_autocorrelation", "motif", "repeated_motif",
                  "preferred_intervals", "resolve_leaps", "unique_extrema")
#: Chord-, key- and form-aware terms.
CHORD_TERMS = ("chord_tone_on_strong_beat", "consonance", "cadence", "stepwise_motion",
               "leading_tone_resolution", "range", "rhythmic_variety", "rest_ratio")
#: Time-weighted, rate, rhythm, phrase and form terms (rewards.melody): what ``theory`` is built from.
MELODY_TERMS = melody.MELODY_TERMS

# The RL Tuner's r_MT: the nine rules, unweighted (their values already carry the
# paper's scale). The paper's c = 0.5 multiplies this by 2 next to log p (see "rl_tuner").
register_preset("rl_tuner_theory", {name: 1.0 for name in RL_TUNER_RULES})

# The default melody reward. Nothing in it pays per note: harmony is paid per beat of
# sound, intervals as shares of the melody's moves, motifs per bar, rhythm as the distance
# of the note-length histogram to the corpus's, phrases per phrase; the per-note terms
# left (no_repetition, range) only penalise. The terms that read the melody tied through
# cannot tell four struck 16ths of one pitch from a quarter; repeat_rate can, and charges
# a melody that repeats notes more than real melodies do. So neither a stream of 16ths,
# nor repeated 16ths, nor one held note can outscore a real melody, and splitting a note
# into repeated notes never raises the score (tests/test_rewards_melody.py). Weights: one
# beat of chord tone = 1, a chord tone on a strong beat = 3, a fully stepwise melody = 6,
# a tonic close by step = 9, the corpus's rhythm instead of a stream of 16ths = about 17,
# every note struck again as 16ths instead of held = about -7.
register_preset("theory", {
    "in_key_time": 4.0,
    "chord_tone_time": 1.0,
    "chord_tone_on_strong_beat": 3.0,
    "stepwise_share": 6.0,
    "leap_rate": 6.0,
    "repeat_rate": 10.0,
    "leap_resolution": 1.0,
    "bar_motif": 2.0,
    "note_length_profile": 25.0,
    "phrase_endings": 3.0,
    "period_form": 2.0,
    "cadence": 6.0,
    "no_repetition": 0.1,
    "range": 1.0,
    "rest_ratio": 2.0,
})

# The per-note ``theory`` of earlier versions (before issue 18), kept to compare reward
# designs: every RL Tuner rule plus the chord-aware terms, most of them paid per note, so
# a stream of 16ths farms it (the motif term is halved: it pays 3-4.5 at almost every
# step of a busy random line).
register_preset("theory_v0", {
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
LAZY_TERMS["discriminator"] = "agents.models.discriminator:DiscriminatorReward"
LAZY_TERMS["prior_log_likelihood"] = "agents.models.prior:PriorLogLikelihood"
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
# jam_chords pays what the metric measures (note-in-chord per sounding 16th), the data's
# chord-length distribution (jam_chord_lengths), and makes key-foreign chords and
# changes off the melody's onsets cost a little.
register_preset("jam_chords", {
    "jam_note_in_chord": 1.0,
    "jam_chord_lengths": 2.0,
    "jam_onset_alignment": {"weight": 0.1, "bonus": 0.0, "penalty": 1.0},
    "jam_harmonic_rhythm": 1.0,
    "jam_cadence_together": 4.0,
    "jam_diatonic_chord": {"weight": 0.5, "bonus": 0.0, "penalty": 1.0},
    "jam_chord_vocabulary": 0.5,
    "jam_functional_progression": 0.25,
})
register_preset("jam_melody", {
    "theory": 1.0,
    "jam_note_in_chord": 2.0,
    "jam_onset_alignment": 0.5,
    "jam_cadence_together": 4.0,
})
