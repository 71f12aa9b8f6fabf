"""``musicenv study serve|export|report|fit|simulate``: the listening study from the command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_commands", "fit_study"]


def fit_study(study_dirs: list[str | os.PathLike], *, groups: list[str] | None = None, members: int = 8,
              degree: int = 2, holdout: float = 0.2, seed: int = 0):
    """Fit a :class:`~musicenv.study.fit.PreferenceModel` to the answers of one or more studies."""
    from musicenv.study.db import StudyDB
    from musicenv.study.features import DEFAULT_GROUPS, available_groups, piece_features
    from musicenv.study.fit import PreferenceModelError, fit_preference
    from musicenv.study.report import answer_outcomes
    from musicenv.study.simulate import pieces_as_compositions

    if groups is None:
        groups = [g for g in DEFAULT_GROUPS if g in available_groups()]
    comps, a_all, b_all, y_all = [], [], [], []
    for d in study_dirs:
        with StudyDB(d) as db:
            pieces = db.pieces()
            rows = db.answers()
        index = {p.id: len(comps) + i for i, p in enumerate(pieces)}
        comps += pieces_as_compositions(pieces)
        a, b, y = answer_outcomes(rows)
        a_all += [index[int(i)] for i in a]
        b_all += [index[int(i)] for i in b]
        y_all += list(y)
    if len(y_all) < 10:
        raise PreferenceModelError(f"{len(y_all)} answers in {', '.join(map(str, study_dirs))}: a preference model "
                                   "needs at least 10")
    names, X = piece_features(comps, groups)
    model = fit_preference(X, a_all, b_all, y_all, feature_names=names, groups=list(groups), members=members,
                           degree=degree, holdout=holdout, seed=seed)
    model.metrics["studies"] = [str(d) for d in study_dirs]
    return model


def _cmd_serve(args: argparse.Namespace) -> int:
    from musicenv.study.app import check_host, serve
    from musicenv.study.db import DB_NAME
    from musicenv.study.pieces import create_study

    check_host(args.host, args.allow_remote)
    folder = Path(args.study_dir)
    if not (folder / DB_NAME).is_file():
        if not args.source:
            print(f"error: {folder} holds no study yet; give its sources to create it, e.g. "
                  f"musicenv study serve {folder} --source rule --source random --source corpus:bach",
                  file=sys.stderr)
            return 2
        create_study(folder, args.source, contexts=args.contexts, n_bars=args.bars, meter=args.meter,
                     seed=args.seed, temperature=args.temperature, name=args.name, audio=args.audio,
                     soundfont=args.soundfont, tempo=args.tempo)
    elif args.source:
        from musicenv.study.db import StudyDB

        with StudyDB(folder) as db:
            have = db.settings["sources"]
        from musicenv.study.pieces import parse_sources

        if parse_sources(args.source) != have:
            print(f"error: the study in {folder} was made with sources {have}; leave out --source to serve it, "
                  "or give a new folder for a new study", file=sys.stderr)
            return 2
    if args.create_only:
        print(f"study ready in {folder}")
        return 0
    serve(folder, host=args.host, port=args.port, allow_remote=args.allow_remote)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from musicenv.study.report import export_answers

    path = export_answers(args.study_dir, args.out, args.format)
    print(f"wrote {path}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from musicenv.study.report import write_report

    md, png = write_report(args.study_dir, args.out, resamples=args.resamples, seed=args.seed)
    print(md.read_text(encoding="utf-8"))
    print(f"wrote {md} and {png}")
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    model = fit_study(args.study_dirs, groups=args.groups, members=args.members, degree=args.degree,
                      holdout=args.holdout, seed=args.seed)
    path = model.save(args.out)
    m = model.metrics
    print(f"fitted on {m['answers']} answers over {m['pieces']} pieces ({len(model.feature_names)} features: "
          f"{', '.join(model.groups)}; {m['members']} members, lambda {m['lambda']:g})")
    if "heldout_accuracy" in m:
        print(f"held-out pair accuracy {100 * m['heldout_accuracy']:.1f} % on {m['heldout_answers']} answers "
              f"(with the spread penalty k=1: {100 * m['heldout_accuracy_k1']:.1f} %; train "
              f"{100 * m['train_accuracy']:.1f} %)")
    print(f"wrote {path}; use it as the reward term: --reward '{{\"theory\": 1, \"preference\": "
          f"{{\"weight\": 5, \"model\": \"{path}\"}}}}' or in a YAML spec")
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from musicenv.study.simulate import simulate_study

    summary = simulate_study(args.study_dir, n_raters=args.raters, pairs_per_rater=args.pairs_per_rater,
                             temperature=args.temperature, tie_margin=args.tie_margin, seed=args.seed)
    print(f"added {summary['answers_added']} simulated answers; hidden utility per source: "
          + ", ".join(f"{s} {u:.2f}" for s, u in summary["utility_by_source"].items()))
    return 0


def _run(func):
    def wrapped(args: argparse.Namespace) -> int:
        from musicenv.study.app import RemoteBindError
        from musicenv.study.db import StudyDBError
        from musicenv.study.fit import PreferenceModelError

        try:
            return func(args)
        except (StudyDBError, PreferenceModelError, RemoteBindError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return wrapped


def add_commands(subparsers: Any) -> None:
    """Register ``musicenv study`` (see :mod:`musicenv.cli`)."""
    p = subparsers.add_parser("study", help="blind A/B listening study in the browser; its report; a preference reward",
                              description="A blind A/B listening study in the browser (SQLite-backed), its report, "
                                          "and a Bradley-Terry preference model usable as the reward term "
                                          "'preference'. See README 'Listening study'.")
    sub = p.add_subparsers(dest="study_command", required=True, metavar="COMMAND",
                           help="serve, export, report, fit or simulate (musicenv study COMMAND --help)")

    s = sub.add_parser("serve", help="create (if new) and serve a study on 127.0.0.1")
    s.add_argument("study_dir", help="study folder: created with --source if it holds no study yet")
    s.add_argument("--source", action="append", metavar="SOURCE",
                   help="repeat for each source: random, rule, prior, gan, run:RUN_DIR (or a run folder), "
                        "corpus:bach / corpus:essen / corpus:PATH (real melodies; they set the contexts)")
    s.add_argument("--contexts", type=int, default=10, help="contexts (key, progression) per study (default: 10)")
    s.add_argument("--bars", type=int, default=4, help="bars per piece (default: 4)")
    s.add_argument("--meter", default="4/4", help="4/4, 3/4, 2/4 or 6/8 (default: 4/4)")
    s.add_argument("--seed", type=int, default=0, help="seed of contexts and pieces (default: 0)")
    s.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of sampling sources")
    s.add_argument("--tempo", type=float, default=100.0, help="quarter notes per minute (default: 100)")
    s.add_argument("--audio", choices=("auto", "fluidsynth", "numpy"), default="auto",
                   help="WAV through FluidSynth (auto: when installed) or the built-in numpy synthesiser")
    s.add_argument("--soundfont", help="General MIDI soundfont for FluidSynth")
    s.add_argument("--name", help="study name shown on the page (default: the folder name)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    s.add_argument("--port", type=int, default=8765, help="port (default: 8765)")
    s.add_argument("--allow-remote", action="store_true",
                   help="allow a --host other than loopback (other machines can then reach the study)")
    s.add_argument("--create-only", action="store_true", help="create the study and exit without serving")
    s.set_defaults(func=_run(_cmd_serve))

    s = sub.add_parser("export", help="write every answer as CSV or JSONL")
    s.add_argument("study_dir", help="study folder")
    s.add_argument("--out", required=True, help="output file, .csv or .jsonl")
    s.add_argument("--format", choices=("csv", "jsonl"), help="default: from --out's suffix")
    s.set_defaults(func=_run(_cmd_export))

    s = sub.add_parser("report", help="win rates with bootstrap intervals and a Bradley-Terry ranking (Markdown + PNG)")
    s.add_argument("study_dir", help="study folder")
    s.add_argument("--out", help="folder for report.md and report.png (default: the study folder)")
    s.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default: 10000)")
    s.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: 0)")
    s.set_defaults(func=_run(_cmd_report))

    s = sub.add_parser("fit", help="fit the preference model (reward term 'preference') to studies' answers")
    s.add_argument("study_dirs", nargs="+", help="one or more study folders")
    s.add_argument("--out", required=True, help="model file to write (.json)")
    s.add_argument("--groups", nargs="+", choices=("style", "reward_terms", "style_profile", "prior"),
                   help="feature groups (default: style, reward_terms, and style_profile where available)")
    s.add_argument("--members", type=int, default=8, help="ensemble members (bootstrap resamples; default: 8)")
    s.add_argument("--degree", type=int, choices=(1, 2), default=2, help="2 adds squared features (default)")
    s.add_argument("--holdout", type=float, default=0.2, help="share of answers held out for accuracy (default 0.2)")
    s.add_argument("--seed", type=int, default=0, help="seed of the split, CV folds and bootstrap (default: 0)")
    s.set_defaults(func=_run(_cmd_fit))

    s = sub.add_parser("simulate", help="let simulated raters with a hidden utility answer a study")
    s.add_argument("study_dir", help="study folder")
    s.add_argument("--raters", type=int, default=10, help="simulated raters (default: 10)")
    s.add_argument("--pairs-per-rater", type=int, help="pairs each answers (default: all)")
    s.add_argument("--temperature", type=float, default=0.5, help="rater noise (default: 0.5)")
    s.add_argument("--tie-margin", type=float, default=0.05, help="utility gap below which they answer 'no preference'")
    s.add_argument("--seed", type=int, default=0, help="seed of the raters (default: 0)")
    s.set_defaults(func=_run(_cmd_simulate))
