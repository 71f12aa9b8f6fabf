"""Jam figures: accompanists on the same held-out melodies, with ReaLchords' metrics and push tests.

::

    python -m experiments.jam_eval --runs RUN_DIR [RUN_DIR ...] --out runs/jam_eval

Every accompanist plays the first ``n_bars`` bars of each held-out melody of
``JamChords-v0`` (default: the 30 Bach chorales of the test split that are at least 8
bars of 4/4):

* ``random``: uniformly random legal chord tokens (seed 0);
* ``rule``: :class:`musicenv.jam.RuleAccompanist` (online, the bar heard so far);
* ``oracle``: :func:`musicenv.jam.oracle_chords` (offline: sees the whole melody);
* each trained run (``musicenv train --env JamChords-v0``), greedy, with its masks;
* ``data``: the corpus's own chords (Bach's, derived from all four parts), the reference
  for chord-length entropy.

Per accompanist: note-in-chord (mean over pieces, 95 % bootstrap interval over pieces;
over runs of several seeds, the IQM of the per-seed means with a stratified bootstrap
interval, ``experiments.aggregate``), onset-interval EMD, chord-length entropy (of all
chords, and of the complete ones, without the chord the excerpt's end cuts),
progression diversity, chord changes per 4 beats, the share of chord changes struck on
a beat; the tritone push (the melody moved
up 6 semitones from bar 5: beats until a beat's note-in-chord is back to half its
pre-shift level, mean over pieces) and the cold start (the melody begun at bar 3, or
the latest bar that leaves ``n_bars``: beats until half the level the accompanist
reaches on the same melody from its start). Writes ``jam_eval.json`` and ``jam_eval.md``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from musicenv.jam import (
    RandomAccompanist,
    RuleAccompanist,
    chord_tokens_from_track,
    jam_statistics,
    note_in_chord,
    note_in_chord_per_beat,
    oracle_chords,
    recovery_beats,
)

PUSH_SEMITONES = 6
PUSH_BAR = 4  # 0-based: the shift starts at bar 5
COLD_START_BAR = 2


def _bootstrap(values: list[float], reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(reps, len(v)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _run_player(run_dir: str, env_kwargs: dict, unsafe_load_sb3_zip: bool = False
                ) -> tuple[Callable[[dict], np.ndarray], Any]:
    """``(play, env)``: ``play(options)`` gives the run's greedy chord tokens over the
    melody of a ``JamChords-v0`` env made with ``env_kwargs``; the env observes the
    key-relative or absolute way the run was trained with."""
    import gymnasium as gym

    import musicenv  # noqa: F401
    from agents.train import load_run

    model, _ = load_run(run_dir, unsafe_load_sb3_zip=unsafe_load_sb3_zip)
    relative = "mode" in getattr(model.observation_space, "spaces", {})
    env = gym.make("JamChords-v0", **env_kwargs, key_relative=relative, disable_env_checker=True)
    maskable = "Maskable" in type(model).__name__

    def play(options: dict) -> np.ndarray:
        obs, _ = env.reset(seed=0, options=options)
        done = False
        while not done:
            kw = {"action_masks": env.unwrapped.action_masks()} if maskable else {}
            action, _ = model.predict(obs, deterministic=True, **kw)
            obs, _, done, _, _ = env.step(int(action))
        duet = env.unwrapped.core.duet
        return duet.jam.chord_tokens[0].copy()

    return play, env


def evaluate(runs: list[str], n_bars: int = 8, partner: str = "bach", unsafe_load_sb3_zip: bool = False,
             max_melodies: int | None = None) -> dict[str, Any]:
    """The report of every accompanist (see the module doc); ``max_melodies`` keeps the
    first melodies of the held-out pool only (a quick look, tests)."""
    import gymnasium as gym

    if max_melodies is not None and (isinstance(max_melodies, bool) or not isinstance(max_melodies, int)
                                     or max_melodies < 1):
        raise ValueError(f"max_melodies must be a positive integer or None (all), got {max_melodies!r}")

    import musicenv  # noqa: F401

    env = gym.make("JamChords-v0", partner=partner, n_bars=n_bars, disable_env_checker=True)
    core = env.unwrapped.core
    duet = core.duet
    grid, spb, bar = duet.grid, duet.steps_per_beat, duet.steps_per_bar
    pool = core.pool if max_melodies is None else core.pool[:max_melodies]
    T = duet.n_steps

    def melody(i: int, opts: dict) -> tuple[np.ndarray, int]:
        key, toks, _ = core._melody(np.random.default_rng(0), {"melody": i, **opts})
        return toks, key

    players: dict[str, Callable[[int, dict], np.ndarray]] = {}
    rule = RuleAccompanist(grid, spb, bar)
    players["random"] = lambda i, o: RandomAccompanist(spb, seed=i).accompany(*melody(i, o))
    players["rule (online)"] = lambda i, o: rule.accompany(*melody(i, o))
    players["oracle (offline)"] = lambda i, o: oracle_chords(*melody(i, o), grid, spb, bar)
    for r in runs:
        play, _ = _run_player(r, {"partner": partner, "n_bars": n_bars}, unsafe_load_sb3_zip)
        players[f"PPO {Path(r).name}"] = lambda i, o, play=play: play({"melody": i, **o})

    results: dict[str, Any] = {}
    cold_bar = {i: min(COLD_START_BAR, pool[i].n_steps // bar - n_bars) for i in range(len(pool))}
    for name, player in players.items():
        pairs, nic, push, cold = [], [], [], []
        for i in range(len(pool)):
            mel, _ = melody(i, {})
            ch = player(i, {})
            pairs.append((mel, ch))
            nic.append(note_in_chord(mel, ch, grid))
            pm, _ = melody(i, {"transpose": PUSH_SEMITONES, "transpose_bar": PUSH_BAR})
            per_beat = note_in_chord_per_beat(pm, player(i, {"transpose": PUSH_SEMITONES, "transpose_bar": PUSH_BAR}),
                                              grid, spb)
            push.append(recovery_beats(per_beat, PUSH_BAR * bar // spb))
            if cold_bar[i] > 0:
                cm, _ = melody(i, {"start_bar": cold_bar[i]})
                per_beat = note_in_chord_per_beat(cm, player(i, {"start_bar": cold_bar[i]}), grid, spb)
                cold.append(recovery_beats(per_beat, 0, level=nic[-1]))
        stats = jam_statistics(pairs, grid, spb)
        stats.update({"note_in_chord_ci": _bootstrap(nic), "tritone_recovery_beats": float(np.nanmean(push)),
                      "tritone_recovery_ci": _bootstrap(push), "cold_start_recovery_beats": float(np.nanmean(cold)),
                      "pieces": len(pairs), "per_piece_note_in_chord": nic})
        results[name] = stats
    # the data: the corpus's own chord track of the same excerpts
    data_pairs = [(melody(i, {})[0], chord_tokens_from_track(pool[i].chords[:T])) for i in range(len(pool))]
    stats = jam_statistics(data_pairs, grid, spb)
    nic = [note_in_chord(m, c, grid) for m, c in data_pairs]
    stats.update({"note_in_chord_ci": _bootstrap(nic), "pieces": len(data_pairs), "per_piece_note_in_chord": nic})
    results["data (Bach's chords)"] = stats
    ppo = [k for k in results if k.startswith("PPO ")]
    if len(ppo) > 1:  # across seeds: IQM of the per-seed values, stratified bootstrap over seeds
        from experiments.aggregate import iqm, stratified_bootstrap_ci

        summary: dict[str, Any] = {"seeds": len(ppo)}
        for metric in ("note_in_chord", "onset_interval_emd", "chord_length_entropy",
                       "chord_length_entropy_complete", "progression_diversity",
                       "changes_per_4_beats", "onsets_on_beat", "tritone_recovery_beats",
                       "cold_start_recovery_beats"):
            vals = [results[k][metric] for k in ppo]
            summary[metric] = float(iqm(vals))
            summary[metric + "_ci"] = tuple(float(x) for x in stratified_bootstrap_ci([vals]))
        results[f"PPO, IQM of {len(ppo)} seeds"] = summary
    return {"partner": partner, "n_bars": n_bars, "melodies": [m.id for m in pool], "results": results}


def piano_roll(run_dir: str, path: str, n_bars: int = 8, partner: str = "bach", melody: int = 0,
               unsafe_load_sb3_zip: bool = False) -> None:
    """PNG (and MIDI, MusicXML next to it) of held-out melody ``melody`` with the run's chords."""
    from musicenv.render import save_png

    play, env = _run_player(run_dir, {"partner": partner, "n_bars": n_bars}, unsafe_load_sb3_zip)
    play({"melody": melody})
    comp = env.unwrapped.composition
    comp.title = f"{env.unwrapped.core.info[0]['melody']} (held out) with PPO's online chords"
    save_png(comp, path)
    comp.to_midi(Path(path).with_suffix(".mid"))
    comp.to_musicxml(Path(path).with_suffix(".musicxml"))


def markdown(report: dict[str, Any]) -> str:
    res = report["results"]
    data = res["data (Bach's chords)"]
    oracle = res["oracle (offline)"]["note_in_chord"]

    def entropy(s: dict, key: str, ci: bool = False) -> str:
        out = f"{s[key]:.2f} ({s[key] / data[key]:.2f})"
        return out + (f" [{s[key + '_ci'][0]:.2f}, {s[key + '_ci'][1]:.2f}]" if ci else "")

    lines = [f"{len(report['melodies'])} held-out {report['partner']} melodies, first {report['n_bars']} bars.",
             "",
             "| accompanist | note-in-chord [95 % CI] | / oracle | onset EMD (beats) | chord-length entropy (/ data) | "
             "complete chords (/ data) | progression diversity | changes / 4 beats | on the beat | "
             "tritone recovery (beats) | cold-start recovery (beats) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in res.items():
        seeds = "seeds" in s
        lo, hi = s["note_in_chord_ci"]
        push = s.get("tritone_recovery_beats", float("nan"))
        push_text = f"{push:.2f}" + (f" [{s['tritone_recovery_beats_ci'][0]:.2f}, "
                                     f"{s['tritone_recovery_beats_ci'][1]:.2f}]" if seeds else "")
        lines.append(
            f"| {name}{' [95 % CI over seeds]' if seeds else ''} | {s['note_in_chord']:.3f} [{lo:.3f}, {hi:.3f}] | "
            f"{s['note_in_chord'] / oracle:.2f} | {s['onset_interval_emd']:.2f} | "
            f"{entropy(s, 'chord_length_entropy', seeds)} | {entropy(s, 'chord_length_entropy_complete', seeds)} | "
            f"{s['progression_diversity']:.2f} | {s['changes_per_4_beats']:.2f} | {s['onsets_on_beat']:.2f} | "
            f"{push_text} | {s.get('cold_start_recovery_beats', float('nan')):.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="*", default=[], help="JamChords-v0 run directories")
    p.add_argument("--n-bars", type=int, default=8)
    p.add_argument("--partner", default="bach")
    p.add_argument("--max-melodies", type=int, help="the first K held-out melodies only (default: all)")
    p.add_argument("--out", default="runs/jam_eval")
    p.add_argument("--png", help="write a piano roll of the first held-out melody with the first run's chords here")
    p.add_argument("--unsafe-load-sb3-zip", action="store_true",
                   help="also load runs of older versions that hold only SB3 .zip files (pickles: trusted runs only)")
    args = p.parse_args(argv)
    if args.max_melodies is not None and args.max_melodies < 1:
        p.error(f"--max-melodies must be at least 1, got {args.max_melodies}")
    out = Path(args.out)
    os.makedirs(out, exist_ok=True)
    report = evaluate(args.runs, args.n_bars, args.partner, args.unsafe_load_sb3_zip, args.max_melodies)
    (out / "jam_eval.json").write_text(json.dumps(report, indent=1))
    (out / "jam_eval.md").write_text(markdown(report))
    print(markdown(report))
    if args.png and args.runs:
        piano_roll(args.runs[0], args.png, args.n_bars, args.partner, unsafe_load_sb3_zip=args.unsafe_load_sb3_zip)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
