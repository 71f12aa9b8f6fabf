"""The README's main job (``make run`` = ``musicenv main-job --out out``).

On a fresh clone, in under 10 minutes on 2 cores:

1. **Train** a small PPO agent *from the prior* on MusicComposition-v0 with the
   default reward (``theory``): ``agents.policies.PriorActorCriticPolicy`` reads the
   frozen note-RNN's log p(next token) from the ``prior`` observation block
   (``observe_prior=True``) and starts out as exactly the prior; PPO learns a
   correction on top. The run directory is ``OUT/ppo_from_prior`` (a finished run is
   reused, an interrupted one resumed).
2. **Compare** it with the untouched prior and the random policy on the same
   held-out pieces (the same env seeds, so the same keys and chord progressions):
   the mean of every reward term, the music statistics of :mod:`musicenv.metrics`
   and the NLL of each piece under the prior, in ``OUT/results.md`` and
   ``OUT/results.json``.
3. **Compose**: every compared piece is written by ``musicenv compose`` under
   ``OUT/pieces/<source>/`` (MIDI, MusicXML, piano-roll PNG, WAV when FluidSynth and a
   soundfont are installed, and ``index.md``), and ``OUT/piano_rolls.png`` stacks the
   first piece of each source.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MainJobSettings", "SOURCES", "run_main_job", "add_commands"]

#: (label, file-name prefix) of each compared source; the run's source string is built
#: from its directory.
SOURCES: tuple[tuple[str, str], ...] = (("PPO from the prior", "ppo"), ("prior", "prior"), ("random", "random"))

#: Statistics shown in the results table (all of them are in results.json).
TABLE_METRICS: tuple[tuple[str, str, float], ...] = (
    # (key in musicenv.metrics.evaluate_set, label, scale)
    ("rl_tuner/notes_not_in_key", "notes not in key (% of steps, as the RL Tuner)", 100.0),
    ("rl_tuner/excessively_repeated", "excessively repeated (% of steps)", 100.0),
    ("rl_tuner/leaps_resolved", "% leaps resolved", 100.0),
    ("harmony/chord_tone_rate", "% chord tones", 100.0),
    ("harmony/cadence_rate", "% ending with a cadence", 100.0),
    ("muspy/pitch_range", "pitch range (semitones)", 1.0),
    ("muspy/pitch_class_entropy", "pitch-class entropy (bits)", 1.0),
    ("diversity/distinct_4", "distinct 4-grams (share)", 1.0),
)


@dataclass
class MainJobSettings:
    """What ``musicenv main-job`` does.

    Attributes:
        out: output folder.
        timesteps: PPO training steps.
        pieces: held-out pieces per source (compared and written).
        seed: training seed.
        eval_seed: env seed of the first compared piece (piece k uses ``eval_seed + k``);
            far from the training and evaluation seeds agents.train uses.
        threads: torch threads.
        wav: as :func:`musicenv.compose.compose` (None: when FluidSynth is there).
        progress: progress bars.
        hyperparams: PPO hyperparameters overriding agents/hyperparams/ppo.yml.
    """

    out: str = "out"
    timesteps: int = 100_000
    pieces: int = 24
    seed: int = 0
    eval_seed: int = 7_000_000
    threads: int = 1
    wav: bool | None = None
    progress: bool = True
    hyperparams: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        for name, minimum in (("timesteps", 1), ("pieces", 1), ("seed", 0), ("eval_seed", 0), ("threads", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def train_config(settings: MainJobSettings) -> Any:
    """The training run: PPO from the prior with the shipped PPO settings."""
    from agents.train import TrainConfig

    return TrainConfig(algo="ppo", env_id="MusicComposition-v0", policy="agents.policies:PriorActorCriticPolicy",
                       env_kwargs={"observe_prior": True}, n_timesteps=settings.timesteps, seed=settings.seed,
                       out=str(Path(settings.out) / "ppo_from_prior"), eval_freq=0, final_episodes=5,
                       baselines=[], hyperparams=dict(settings.hyperparams), n_threads=settings.threads, progress=settings.progress)


def _train_or_reuse(settings: MainJobSettings, force: bool = False) -> Path:
    """Train the agent, or reuse (finished) / resume (interrupted) the one in
    ``OUT/ppo_from_prior`` if it was made with the same resolved config (see
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

    cfg = resolve_config(train_config(settings))
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
        return resume(run_dir, progress=settings.progress).run_dir
    return train(cfg, force=force).run_dir


def _nll_per_token(prior: Any, tokens: np.ndarray) -> float:
    return float(-np.mean(prior.sequence_log_probs(tokens)))


def _summary(records: list[Any], prior: Any) -> dict[str, Any]:
    from agents.callbacks import music_statistics

    totals = np.array([r.reward_terms["total"] for r in records])
    terms = {name: float(np.mean([r.reward_terms[name] for r in records]))
             for name in records[0].reward_terms if name != "total"}
    nll = [_nll_per_token(prior, r.composition.tokens) for r in records]
    return {"pieces": len(records), "reward_mean": float(totals.mean()), "reward_std": float(totals.std()),
            "terms": terms, "nll_under_prior": float(np.mean(nll)),
            "metrics": music_statistics([r.composition for r in records])}


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def results_markdown(results: dict[str, Any]) -> str:
    """The comparison as a markdown table (sources as columns)."""
    labels = list(results["sources"])
    s = results["sources"]
    lines = [f"| {results['pieces']} held-out pieces, mean | " + " | ".join(labels) + " |",
             "|---|" + "---:|" * len(labels)]
    lines.append("| **total reward** (`theory`) | " + " | ".join(
        f"**{_fmt(s[k]['reward_mean'], 1)}** ± {_fmt(s[k]['reward_std'], 1)}" for k in labels) + " |")
    lines.append("| NLL under the prior (nats/token) | " + " | ".join(_fmt(s[k]["nll_under_prior"], 3)
                                                                    for k in labels) + " |")
    for key, label, scale in TABLE_METRICS:
        lines.append(f"| {label} | " + " | ".join(_fmt(s[k]["metrics"].get(key, float("nan")) * scale, 1)
                                                  for k in labels) + " |")
    for term in s[labels[0]]["terms"]:
        lines.append(f"| term `{term}` | " + " | ".join(_fmt(s[k]["terms"][term]) for k in labels) + " |")
    return "\n".join(lines) + "\n"


def _stack_piano_rolls(records: dict[str, Any], path: Path) -> Path:
    from PIL import Image

    from musicenv.render import render_rgb, write_atomically

    rows = [render_rgb(r.composition, title=f"{label}: {r.composition.key.name}, total reward "
                                            f"{r.reward_terms['total']:.1f}")
            for label, r in records.items()]
    width = max(img.shape[1] for img in rows)
    rows = [np.pad(img, ((0, 0), (0, width - img.shape[1]), (0, 0)), constant_values=255) for img in rows]
    picture = np.concatenate(rows, axis=0)
    return write_atomically(path, lambda tmp: Image.fromarray(picture).save(tmp, format="PNG"), what="PNG image")


def run_main_job(settings: MainJobSettings, *, force: bool = False) -> dict[str, Any]:
    """Train (or reuse), compare and compose; returns what ``results.json`` holds.
    ``force`` trains the agent again if ``OUT`` holds one made with another config."""
    import torch

    from agents.note_rnn import load_prior
    from agents.train import write_json
    from musicenv.compose import check_out_dir, compose
    from musicenv.render import write_atomically

    settings.validate()
    out = Path(settings.out)
    check_out_dir(out)
    torch.set_num_threads(settings.threads)
    t0 = time.perf_counter()
    run_dir = _train_or_reuse(settings, force=force)
    t_train = time.perf_counter() - t0

    prior = load_prior()
    sources = {"PPO from the prior": f"run:{run_dir}", "prior": "prior", "random": "random"}
    summaries: dict[str, Any] = {}
    firsts: dict[str, Any] = {}
    for (label, prefix), source in zip(SOURCES, sources.values()):
        print(f"\n== composing {settings.pieces} pieces: {label}")
        records = compose(source, settings.pieces, out / "pieces" / prefix, seed=settings.eval_seed, wav=settings.wav,
                          name=prefix, progress=settings.progress, overwrite=True)  # the job's own folders
        summaries[label] = _summary(records, prior)
        firsts[label] = records[0]
    results = {"settings": asdict(settings), "run_dir": str(run_dir), "pieces": settings.pieces,
               "seeds": [settings.eval_seed, settings.eval_seed + settings.pieces - 1],
               "train_seconds": t_train, "total_seconds": time.perf_counter() - t0, "sources": summaries}
    table = results_markdown(results)
    write_json(out / "results.json", results)
    text = (f"# musicenv main job\n\nPPO from the prior, {settings.timesteps} steps (run `{run_dir}`), against the "
            f"prior and the random policy on the same {settings.pieces} held-out pieces (env seeds "
            f"{results['seeds'][0]}..{results['seeds'][1]}).\n\n{table}\n"
            "Pieces: `pieces/ppo/`, `pieces/prior/`, `pieces/random/` (each with its index.md); "
            "the first of each: `piano_rolls.png`.\n")
    write_atomically(out / "results.md", lambda tmp: tmp.write_text(text), what="results")
    _stack_piano_rolls(firsts, out / "piano_rolls.png")
    print("\n" + table)
    print(f"Wrote {out}/results.md, results.json, piano_rolls.png and pieces/ "
          f"(training {t_train:.0f} s, all {results['total_seconds']:.0f} s)")
    return results


# ---------------------------------------------------------------------------------- CLI
def _cmd_main_job(args: argparse.Namespace) -> int:
    settings = MainJobSettings(out=args.out, timesteps=args.timesteps, pieces=args.pieces, seed=args.seed,
                               eval_seed=args.eval_seed, threads=args.threads, wav=args.wav,
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
    p = subparsers.add_parser("main-job", help="the README's main job (make run): train PPO from the prior, "
                                                "compare it with the prior and random, compose all three")
    p.add_argument("--out", default=d.out, help=f"output folder (default: {d.out})")
    p.add_argument("--timesteps", type=int, default=d.timesteps, help=f"PPO steps (default: {d.timesteps})")
    p.add_argument("--pieces", type=int, default=d.pieces, help=f"pieces per source (default: {d.pieces})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"training seed (default: {d.seed})")
    p.add_argument("--eval-seed", type=int, default=d.eval_seed, help=f"first piece's seed (default: {d.eval_seed})")
    p.add_argument("--threads", type=int, default=d.threads, help=f"torch threads (default: {d.threads})")
    p.add_argument("--wav", action=argparse.BooleanOptionalAction, default=None,
                   help="write WAV files (default: when FluidSynth and a soundfont are found)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="progress bars on a terminal, progress lines when piped (default: yes)")
    p.add_argument("--force", action="store_true", help="train the agent again if OUT holds one made with another "
                                                        "config (default: refuse, naming the differing keys)")
    p.set_defaults(func=_cmd_main_job)


if __name__ == "__main__":
    from musicenv.cli import main

    sys.exit(main(["main-job", *sys.argv[1:]]))
