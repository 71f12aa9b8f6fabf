"""The ``musicenv`` command.

Subcommands:

* ``musicenv demo [--out DIR] [--pieces N] [--seed S]``: compose pieces with the
  random and the rule-based baseline on MusicComposition-v0, print an ANSI piano
  roll and a table of reward terms, write MIDI, MusicXML and PNG files to DIR.
* ``musicenv rewards``: list every reward term and preset with its summary.

Heavy dependencies (torch, SB3) are imported only inside the subcommands that need them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _cmd_rewards(args: argparse.Namespace) -> int:
    import rewards

    catalogue = rewards.available()
    width = max(map(len, catalogue))
    for name, summary in catalogue.items():
        print(f"{name:<{width}}  {summary}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import gymnasium as gym
    import numpy as np

    import musicenv  # noqa: F401  (registers the envs)
    from musicenv.baselines import RandomPolicy, RuleBasedPolicy, run_episode
    from musicenv.render import render_ansi, save_png

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"error: --out {out} exists and is not a directory", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    env = gym.make("MusicComposition-v0", reward=args.reward, n_bars=args.bars)
    policies = {"random": RandomPolicy, "rule_based": RuleBasedPolicy}
    rows: dict[str, list[dict[str, float]]] = {}
    for name, cls in policies.items():
        rows[name] = []
        for i in range(args.pieces):
            seed = args.seed + i
            comp, totals = run_episode(env, cls(env, seed=seed), seed=seed)
            comp.title = f"{name} #{i + 1} ({comp.key.name})"
            rows[name].append(totals)
            stem = out / f"{name}_{i + 1}"
            comp.to_midi(stem.with_suffix(".mid"))
            comp.to_musicxml(stem.with_suffix(".musicxml"))
            save_png(comp, stem.with_suffix(".png"), title=comp.title)
            if i == 0:
                print(f"\n== {comp.title}: total reward {totals['total']:.1f}")
                print(render_ansi(comp))
    terms = list(rows["random"][0])
    print(f"\nMean reward per term over {args.pieces} pieces (reward {args.reward!r}):\n")
    print(f"| term | {' | '.join(policies)} |")
    print(f"|---|{'---:|' * len(policies)}")
    for term in terms:
        cells = " | ".join(f"{np.mean([r[term] for r in rows[p]]):.2f}" for p in policies)
        print(f"| {term} | {cells} |")
    print(f"\nWrote {2 * args.pieces} pieces (MIDI, MusicXML, PNG) to {out}/")
    return 0


#: Modules that add subcommands: each defines ``add_commands(subparsers)``, registering
#: parsers whose ``func(args) -> int`` runs the command. They are imported when the
#: parser is built, so they must import heavy dependencies (torch, SB3) inside ``func``.
COMMAND_MODULES: tuple[str, ...] = ("musicenv.compose", "agents.train", "agents.gan_cli", "agents.prior_cli", "agents.jam_bc", "experiments.throughput", "experiments.benchmark",
                                   "experiments.main_job", "experiments.rl_tuner_table", "musicenv.study.cli")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="musicenv", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub)
    p = sub.add_parser("demo", help="compose with the random and rule-based baselines; write MIDI/MusicXML/PNG")
    p.add_argument("--out", default="out", help="output directory (default: out)")
    p.add_argument("--pieces", type=int, default=3, help="pieces per policy (default: 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first piece (default: 0)")
    p.add_argument("--bars", type=int, default=4, help="bars per piece (default: 4)")
    p.add_argument("--reward", default="theory", help="reward spec: name, preset or YAML path (default: theory)")
    p.set_defaults(func=_cmd_demo)
    p = sub.add_parser("rewards", help="list reward terms and presets")
    p.set_defaults(func=_cmd_rewards)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "pieces", 1) < 1:
        print("error: --pieces must be >= 1", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (ValueError, OSError) as e:  # user errors: the message says what was wrong and what is accepted
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; what had finished is kept (files are written atomically)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
