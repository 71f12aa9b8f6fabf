"""The README's main job (``make run`` = ``musicenv main-job --out out``).

On a fresh clone, in under 10 minutes on 2 cores:

1. **Train the showcase**: KL-penalised PPO (:class:`agents.kl_control.KLPPO`) from the
   default note-RNN prior on MusicComposition-v0 with the default reward ``theory``
   (which pays per beat, per bar and per phrase, never per note: see
   :mod:`rewards.melody`). ``agents.policies.PriorActorCriticPolicy`` reads the frozen
   prior's log p(next token) from the ``prior`` observation block and starts out as
   exactly the prior; the loss adds ``kl_coef`` x KL(policy || prior), so the agent
   learns what ``theory`` asks while staying a melody the prior finds likely. No action
   mask is used; the discount is ``gamma`` (0.95, so that the close of the piece is
   felt when its final note is chosen). Run directory ``OUT/showcase``.
2. **Train plain PPO from scratch** on the same reward and budget (``OUT/ppo_scratch``),
   so that what a reward alone produces is visible beside it. Finished runs are reused,
   interrupted ones resumed.
3. **Compare** both with the untouched prior and the random policy on the same held-out
   contexts (the same env seeds, so the same keys and chord progressions), and with
   real melodies (the last 4 bars of Bach chorale sopranos, Essen and O'Neill's tunes,
   :func:`musicenv.style.reference_melodies`): the style yardstick of
   :mod:`musicenv.style` (notes per bar, 16ths, leaps, endings, key, chord tones, NLL
   under the prior, style distance, classifier two-sample test on ``c2st_pieces``
   pieces), the band the showcase must reach (:data:`BAND`), every reward term and the
   music statistics of :mod:`musicenv.metrics`; in ``OUT/results.md`` and
   ``OUT/results.json``.
4. **Compose**: the held-out pieces of every source are written by ``musicenv compose``
   under ``OUT/pieces/<source>/`` (MIDI, MusicXML, piano-roll PNG, WAV when FluidSynth
   and a soundfont are installed, and ``index.md``), and ``OUT/piano_rolls.png`` stacks
   the first piece of each source.

The prior is one setting (``prior``, default ``"default"``: whatever checkpoint the
package ships under that name); nothing here depends on which prior it is.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MainJobSettings", "BAND", "SOURCES", "run_main_job", "add_commands", "band_check", "style_row"]

#: (label, file-name prefix, run directory or None) of each compared source.
SOURCES: tuple[tuple[str, str, str | None], ...] = (
    ("KL-PPO from the prior (showcase)", "showcase", "showcase"),
    ("PPO from scratch", "ppo_scratch", "ppo_scratch"),
    ("prior", "prior", None),
    ("random", "random", None),
)
#: Real-melody reference rows: (label, musicenv.corpus collection).
REFERENCE_ROWS: tuple[tuple[str, str], ...] = (
    ("real: Bach chorale sopranos", "bach"), ("real: Essen folk songs", "essen"), ("real: O'Neill's tunes", "oneills"))

#: The band the showcase's pieces must reach (issue 18): (key, label, test, text).
BAND: tuple[tuple[str, str, Callable[[float], bool], str], ...] = (
    ("notes_per_bar", "notes per bar", lambda v: 2.5 <= v <= 8, "2.5-8"),
    ("sixteenth_share", "16ths, % of notes", lambda v: v <= 0.25, "<= 25"),
    ("leap_share", "leaps >= a fifth, % of intervals", lambda v: v <= 0.08, "<= 8"),
    ("final_long", "final note >= a quarter, % of pieces", lambda v: v >= 0.75, ">= 75"),
    ("final_tonic", "final note on the tonic, % of pieces", lambda v: v >= 0.60, ">= 60"),
    ("in_key_share", "notes in key, %", lambda v: v >= 0.95, ">= 95"),
    ("strong_chord_tone_share", "strong-beat chord tones, %", lambda v: v >= 0.80, ">= 80"),
    ("nll", "NLL under the prior, nats/token", lambda v: v <= 1.0, "<= 1.0"),
)
_PERCENT = {"sixteenth_share", "leap_share", "final_long", "final_tonic", "in_key_share", "strong_chord_tone_share"}

#: Statistics of musicenv.metrics also shown (all of them are in results.json).
TABLE_METRICS: tuple[tuple[str, str, float], ...] = (
    ("rl_tuner/notes_not_in_key", "notes not in key (% of steps, as the RL Tuner)", 100.0),
    ("harmony/chord_tone_rate", "% chord tones", 100.0),
    ("muspy/pitch_range", "pitch range (semitones)", 1.0),
    ("muspy/pitch_class_entropy", "pitch-class entropy (bits)", 1.0),
    ("diversity/distinct_4", "distinct 4-grams (share)", 1.0),
)


@dataclass
class MainJobSettings:
    """What ``musicenv main-job`` does.

    Attributes:
        out: output folder.
        timesteps: training steps of each agent (the showcase and PPO from scratch).
        pieces: held-out pieces per source (compared and written).
        c2st_pieces: pieces per source sampled (not written) for the classifier
            two-sample test against real melodies (the written pieces are among them when
            fewer; 0: no test).
        seed: training seed.
        eval_seed: env seed of the first compared piece (piece k uses ``eval_seed + k``);
            far from the training and evaluation seeds agents.train uses.
        prior: the note-RNN prior (a name of ``agents.note_rnn.prior_path`` or a path).
        kl_coef: the showcase's KL coefficient (KLPPO's beta).
        progression: the progression bank (or progression) of every env, for training and
            for the compared pieces: ``"cadential"`` (default; every context closes with a
            cadence onto the tonic chord, as the pieces real melodies come from do, so a
            melody can end on the tonic over a tonic chord), ``"common"``, or any
            ``progression`` MusicComposition-v0 takes.
        gamma: the showcase's discount. 0.95 rather than kl_ppo.yml's 0.8: the close of a
            piece (a long final note on the tonic) is paid at the last step, up to 16
            steps after the note is chosen, which 0.8 discounts to nothing (0.8**15 = 0.04).
        threads: torch threads.
        wav: as :func:`musicenv.compose.compose` (None: when FluidSynth is there).
        progress: progress bars.
        hyperparams: hyperparameters overriding agents/hyperparams/kl_ppo.yml (the
            showcase) and ppo.yml (PPO from scratch): keys both algorithms take.
    """

    out: str = "out"
    timesteps: int = 200_000
    pieces: int = 24
    c2st_pieces: int = 200
    seed: int = 0
    eval_seed: int = 7_000_000
    prior: str = "default"
    kl_coef: float = 0.03
    gamma: float = 0.95
    progression: str = "cadential"
    threads: int = 1
    wav: bool | None = None
    progress: bool = True
    hyperparams: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        for name, minimum in (("timesteps", 1), ("pieces", 1), ("c2st_pieces", 0), ("seed", 0), ("eval_seed", 0),
                              ("threads", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if isinstance(self.kl_coef, bool) or not isinstance(self.kl_coef, (int, float)) or not self.kl_coef >= 0:
            raise ValueError(f"kl_coef must be a number >= 0, got {self.kl_coef!r}")
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, (int, float)) or not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be a number in (0, 1], got {self.gamma!r}")
        if not isinstance(self.progression, str) or not self.progression:
            raise ValueError(f"progression must be a bank name or a progression, got {self.progression!r}")
        if not isinstance(self.prior, str) or not self.prior:
            raise ValueError(f"prior must be a checkpoint name or path, got {self.prior!r}")


def train_configs(settings: MainJobSettings) -> dict[str, Any]:
    """The two training runs: the showcase (KLPPO from the prior) and PPO from scratch."""
    from agents.train import TrainConfig

    env = {"progression": settings.progression}
    common = dict(env_id="MusicComposition-v0", reward="theory", n_timesteps=settings.timesteps, seed=settings.seed,
                  eval_freq=0, final_episodes=5, baselines=[], n_threads=settings.threads, progress=settings.progress)
    return {
        "showcase": TrainConfig(algo="kl_ppo", policy="agents.policies:PriorActorCriticPolicy",
                                env_kwargs={"observe_prior": settings.prior, **env},
                                hyperparams={"kl_coef": float(settings.kl_coef), "gamma": float(settings.gamma),
                                             **settings.hyperparams},
                                out=str(Path(settings.out) / "showcase"), **common),
        "ppo_scratch": TrainConfig(algo="ppo", policy="MultiInputPolicy", out=str(Path(settings.out) / "ppo_scratch"),
                                   env_kwargs=dict(env), hyperparams=dict(settings.hyperparams), **common),
    }


def _train_or_reuse(cfg: Any, progress: bool, force: bool = False) -> Path:
    """Train one agent, or reuse (finished) / resume (interrupted) the one in
    ``cfg.out`` if it was made with the same resolved config (see
    :func:`agents.train.check_reusable`); otherwise stop naming the differing keys,
    or, with ``force``, train it again."""
    from agents.train import (
        CONFIG_FILE,
        FINAL_METRICS_FILE,
        StaleRunError,
        check_reusable,
        resolve_config,
        resume,
        train,
    )

    cfg = resolve_config(cfg)
    run_dir = Path(cfg.out)
    if (run_dir / CONFIG_FILE).is_file():
        try:
            check_reusable(run_dir, cfg, what="the main job's agent")
        except StaleRunError:
            if not force:
                raise
            print(f"--force: training {run_dir}/ again (it was made with another config)")
            return train(cfg, force=True).run_dir
        if (run_dir / FINAL_METRICS_FILE).is_file():
            print(f"reusing the finished run {run_dir}/ (same config; --force trains it again)")
            return run_dir
        print(f"resuming the interrupted run {run_dir}/")
        return resume(run_dir, progress=progress).run_dir
    return train(cfg, force=force).run_dir


def sample_compositions(source: str, n: int, seed: int, progression: str | None = None) -> list[Any]:
    """``n`` pieces of a ``musicenv compose`` source, played but not written (piece k
    uses env seed ``seed + k``; ``progression`` as the env takes it, None: the source's
    or the env's default)."""
    import gymnasium as gym

    from musicenv.baselines import run_episode
    from musicenv.compose import get_source

    info, argument = get_source(source)
    settings = dict(info.env_kwargs(argument)) if info.env_kwargs is not None else {}
    if progression is not None:
        settings["progression"] = progression
    env = gym.make("MusicComposition-v0", **settings)
    try:
        make_policy = info.factory(env, argument=argument, temperature=1.0)
        return [run_episode(env, make_policy(seed + k), seed=seed + k)[0] for k in range(n)]
    finally:
        env.close()


def _fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def style_row(compositions: list[Any], reference: list[Any], nll_fn: Callable[[np.ndarray], float],
              theory: list[float], c2st_sets: tuple[list[Any], list[Any], list[Any]] | None = None) -> dict[str, Any]:
    """One row of the table: the style profile of the pieces (with NLL), the mean
    ``theory`` reward, the style distance to ``reference`` and, with ``c2st_sets`` =
    (sampled pieces, all real melodies, the prior's style), the classifier two-sample
    test accuracies."""
    from musicenv.style import classifier_two_sample_test, style_distance, style_profile

    prof = style_profile(compositions, nll_fn=nll_fn)
    row: dict[str, Any] = {k: v for k, v in prof.items() if not isinstance(v, list)}
    row["length_hist"], row["interval_hist"] = prof["length_hist"], prof["interval_hist"]
    row["leap_share"] = prof["leap_share"]
    row["theory"] = float(np.mean(theory))
    row["theory_std"] = float(np.std(theory))
    row["style_distance"] = style_distance(prof, style_profile(reference, nll_fn=nll_fn))["distance"]
    if c2st_sets is not None:
        sampled, real, styled = c2st_sets
        row["c2st_accuracy"] = classifier_two_sample_test(sampled, real)["accuracy"]
        row["c2st_accuracy_style"] = classifier_two_sample_test(sampled, styled)["accuracy"]
        row["c2st_pieces"] = len(sampled)
    return row


def band_check(row: dict[str, Any], prior_theory: float, random_theory: float) -> dict[str, bool]:
    """Which criteria of :data:`BAND` (and "theory above the prior's and random's") a row meets."""
    out = {key: bool(not math.isnan(row.get(key, math.nan)) and test(row[key])) for key, _, test, _ in BAND}
    out["theory"] = row["theory"] > prior_theory and row["theory"] > random_theory
    return out


def results_markdown(results: dict[str, Any]) -> str:
    """The comparison as a markdown table: sources and real melodies as rows."""
    rows = results["rows"]
    head = ["", *[f"{label}" for _, label, _, _ in BAND], "`theory`", "style distance", "C2ST acc. (all real)",
            "C2ST acc. (Bach)", "in band"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    lines.append("| *band* | " + " | ".join(text for _, _, _, text in BAND)
                 + " | > prior, random | | (moonshot <= 0.65) | | |")
    for label, row in rows.items():
        cells = []
        for key, _, _, _ in BAND:
            v = row.get(key, math.nan)
            cells.append(_fmt(100 * v, 1) if key in _PERCENT else _fmt(v, 2))
        cells.append(_fmt(row["theory"], 1))
        cells.append(_fmt(row["style_distance"], 3))
        cells.append(_fmt(row.get("c2st_accuracy"), 2))
        cells.append(_fmt(row.get("c2st_accuracy_style"), 2))
        met = row.get("band")
        cells.append("" if met is None else f"{sum(met.values())}/{len(met)}")
        bold = label == SOURCES[0][0]
        lines.append(f"| {'**' + label + '**' if bold else label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def terms_markdown(results: dict[str, Any]) -> str:
    """Every reward term's mean episode value and the music statistics, sources as columns."""
    s = results["sources"]
    labels = list(s)
    lines = [f"| {results['pieces']} held-out pieces, mean | " + " | ".join(labels) + " |",
             "|---|" + "---:|" * len(labels)]
    for key, label, scale in TABLE_METRICS:
        lines.append(f"| {label} | " + " | ".join(_fmt(s[k]["metrics"].get(key, float("nan")) * scale, 1)
                                                  for k in labels) + " |")
    for term in s[labels[0]]["terms"]:
        lines.append(f"| term `{term}` | " + " | ".join(_fmt(s[k]["terms"][term]) for k in labels) + " |")
    return "\n".join(lines) + "\n"


def _stack_piano_rolls(records: dict[str, Any], path: Path) -> Path:
    from PIL import Image

    from musicenv.render import render_rgb, write_atomically

    rows = [render_rgb(r.composition, title=f"{label}: {r.composition.key.name}, theory {r.reward_terms['total']:.1f}",
                       crop=True)
            for label, r in records.items()]
    width = max(img.shape[1] for img in rows)
    rows = [np.pad(img, ((0, 0), (0, width - img.shape[1]), (0, 0)), constant_values=255) for img in rows]
    picture = np.concatenate(rows, axis=0)
    return write_atomically(path, lambda tmp: Image.fromarray(picture).save(tmp, format="PNG"), what="PNG image")


def run_main_job(settings: MainJobSettings, *, force: bool = False) -> dict[str, Any]:
    """Train (or reuse), compare and compose; returns what ``results.json`` holds.
    ``force`` trains an agent again if ``OUT`` holds one made with another config."""
    import torch

    import rewards
    from agents.callbacks import music_statistics
    from agents.note_rnn import load_prior
    from agents.train import write_json
    from musicenv.compose import check_out_dir, compose
    from musicenv.render import write_atomically
    from musicenv.style import reference_melodies

    settings.validate()
    out = Path(settings.out)
    check_out_dir(out)
    torch.set_num_threads(settings.threads)
    t0 = time.perf_counter()
    run_dirs = {name: _train_or_reuse(cfg, settings.progress, force=force)
                for name, cfg in train_configs(settings).items()}
    t_train = time.perf_counter() - t0

    prior = load_prior(settings.prior)

    def nll_fn(tokens: np.ndarray) -> float:
        return float(-np.mean(prior.sequence_log_probs(np.asarray(tokens))))

    real = reference_melodies(4, "4/4")
    real_by = {col: reference_melodies(4, "4/4", (col,)) for _, col in REFERENCE_ROWS}
    styled = real_by["bach"]
    summaries: dict[str, Any] = {}
    rows: dict[str, Any] = {}
    firsts: dict[str, Any] = {}
    for label, prefix, run in SOURCES:
        source = "prior" if prefix == "prior" else "random" if prefix == "random" else f"run:{run_dirs[run]}"
        print(f"\n== composing {settings.pieces} pieces: {label}")
        records = compose(source, settings.pieces, out / "pieces" / prefix, seed=settings.eval_seed, wav=settings.wav,
                          name=prefix, progress=settings.progress, overwrite=True,  # the job's own folders
                          progression=settings.progression)
        comps = [r.composition for r in records]
        totals = [r.reward_terms["total"] for r in records]
        sampled = comps
        if settings.c2st_pieces > settings.pieces:
            sampled = comps + sample_compositions(source, settings.c2st_pieces - settings.pieces,
                                                  settings.eval_seed + settings.pieces, settings.progression)
        rows[label] = style_row(comps, real, nll_fn, totals,
                                (sampled, real, styled) if settings.c2st_pieces > 0 else None)
        summaries[label] = {"pieces": len(records), "reward_mean": float(np.mean(totals)),
                            "reward_std": float(np.std(totals)),
                            "terms": {name: float(np.mean([r.reward_terms[name] for r in records]))
                                      for name in records[0].reward_terms if name != "total"},
                            "metrics": music_statistics(comps)}
        firsts[label] = records[0]
    prior_theory, random_theory = rows["prior"]["theory"], rows["random"]["theory"]
    for label, _, _ in SOURCES:
        rows[label]["band"] = band_check(rows[label], prior_theory, random_theory)
    for label, col in REFERENCE_ROWS:
        pieces = real_by[col]
        theory = [float(rewards.score_steps("theory", c)[1].sum()) for c in pieces]
        rows[f"{label} ({len(pieces)}, last 4 bars)"] = style_row(pieces, real, nll_fn, theory)
    results = {"settings": asdict(settings), "run_dirs": {k: str(v) for k, v in run_dirs.items()},
               "pieces": settings.pieces, "seeds": [settings.eval_seed, settings.eval_seed + settings.pieces - 1],
               "train_seconds": t_train, "total_seconds": time.perf_counter() - t0, "rows": rows,
               "sources": summaries, "showcase_in_band": all(rows[SOURCES[0][0]]["band"].values())}
    table = results_markdown(results)
    write_json(out / "results.json", results)
    text = (f"# musicenv main job\n\nKL-penalised PPO from the prior (`{settings.prior}`, kl_coef {settings.kl_coef}) "
            f"and PPO from scratch, {settings.timesteps} steps each on the `theory` reward over `{settings.progression}` "
            f"progressions, against the prior and the random policy on the same {settings.pieces} held-out pieces (env seeds {results['seeds'][0]}.."
            f"{results['seeds'][1]}), and real melodies (the last 4 bars of 4/4 pieces). Percentages of notes, "
            f"intervals or pieces; the classifier two-sample test (C2ST) on {settings.c2st_pieces} pieces per source "
            "against all real melodies and against Bach's (the prior's style); 0.5 = indistinguishable.\n\n"
            f"{table}\n## Every reward term and statistic\n\n{terms_markdown(results)}\n"
            "Pieces: `pieces/<source>/` (each with its index.md); the first of each: `piano_rolls.png`.\n")
    write_atomically(out / "results.md", lambda tmp: tmp.write_text(text), what="results")
    _stack_piano_rolls(firsts, out / "piano_rolls.png")
    print("\n" + table)
    print(f"Wrote {out}/results.md, results.json, piano_rolls.png and pieces/ "
          f"(training {t_train:.0f} s, all {results['total_seconds']:.0f} s)")
    return results


# ---------------------------------------------------------------------------------- CLI
def _cmd_main_job(args: argparse.Namespace) -> int:
    settings = MainJobSettings(out=args.out, timesteps=args.timesteps, pieces=args.pieces,
                               c2st_pieces=args.c2st_pieces, seed=args.seed, eval_seed=args.eval_seed,
                               prior=args.prior, kl_coef=args.kl_coef, progression=args.progression,
                               threads=args.threads, wav=args.wav,
                               progress=args.progress)
    try:
        run_main_job(settings, force=args.force)
    except (ValueError, NotADirectoryError, PermissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``musicenv main-job`` (see :mod:`musicenv.cli`)."""
    d = MainJobSettings()
    p = subparsers.add_parser("main-job", help="the README's main job (make run): train KL-PPO from the prior and "
                                                "PPO from scratch, compare them with the prior, random and real "
                                                "melodies, compose them all")
    p.add_argument("--out", default=d.out, help=f"output folder (default: {d.out})")
    p.add_argument("--timesteps", type=int, default=d.timesteps,
                   help=f"training steps of each agent (default: {d.timesteps})")
    p.add_argument("--pieces", type=int, default=d.pieces, help=f"pieces per source (default: {d.pieces})")
    p.add_argument("--c2st-pieces", type=int, default=d.c2st_pieces,
                   help=f"pieces per source for the classifier two-sample test (default: {d.c2st_pieces})")
    p.add_argument("--prior", default=d.prior, help=f"note-RNN prior name or checkpoint (default: {d.prior})")
    p.add_argument("--kl-coef", type=float, default=d.kl_coef, help=f"the showcase's KL coefficient (default: {d.kl_coef})")
    p.add_argument("--progression", default=d.progression,
                   help=f"progression bank of every env: cadential, common, or a progression (default: {d.progression})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"training seed (default: {d.seed})")
    p.add_argument("--eval-seed", type=int, default=d.eval_seed, help=f"first piece's seed (default: {d.eval_seed})")
    p.add_argument("--threads", type=int, default=d.threads, help=f"torch threads (default: {d.threads})")
    p.add_argument("--wav", action=argparse.BooleanOptionalAction, default=None,
                   help="write WAV files (default: when FluidSynth and a soundfont are found)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="progress bars on a terminal, progress lines when piped (default: yes)")
    p.add_argument("--force", action="store_true", help="train an agent again if OUT holds one made with another "
                                                        "config (default: refuse, naming the differing keys)")
    p.set_defaults(func=_cmd_main_job)


if __name__ == "__main__":
    from musicenv.cli import main

    sys.exit(main(["main-job", *sys.argv[1:]]))
