"""Reproduce the RL Tuner's Table 1 (Jaques et al. 2017) with our envs, rules and agents.

The paper's setting: 32 sixteenth-note steps (2 bars of 4/4) in C major, 38 tokens,
reward r = log p(a|s) + r_MT / c with c = 0.5 (the ``rl_tuner`` preset). Trains the
three KL-control variants of :mod:`agents.kl_control` — Q, Ψ and G learning — with the
same budget each through :func:`agents.train.train` (hyperparameters from
``agents/hyperparams/rl_tuner_<variant>.yml``), samples ``n_compositions`` pieces from
each (tokens drawn from the softmax of the policy logits, as the paper samples: Q and Ψ
from the softmax of their values, G from p·exp G) and from the prior itself (tokens
drawn from obs["prior"]), computes :func:`musicenv.metrics.rl_tuner_statistics` and
prints :func:`musicenv.metrics.rl_tuner_table` beside the paper's numbers.

Also reported per model, on the same held-out pieces (seeds ``test_seed + k``):
the mean music-theory reward per piece (``rl_tuner_theory``, the nine rules at weight
1, i.e. r_MT summed over the piece) and the mean NLL under the prior in nats per token
(−mean log p(a|s)), for sampled and (for the agents) greedy play. The paper trained
1,000,000 steps and sampled 100,000 pieces per model; the budget here is a parameter.

Output directory: ``results.json`` (budget, wall times, statistics, theory/NLL
summary, the rows of the table), ``table.md`` (Markdown) and ``runs/<variant>/`` (the
training run directories)::

    python -m experiments.rl_tuner_table --out out/rl_tuner_table --timesteps 100000
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from musicenv.files import write_text

__all__ = ["PAPER_SETTING", "add_commands", "evaluate_policy", "main", "q_versus_prior", "run_table"]

#: The paper's environment: 2 bars of 4/4 on a 16th-note grid (32 steps), C major.
PAPER_SETTING: dict[str, Any] = {"key": "C major", "n_bars": 2}
#: Evaluation reward: the rules and the prior's log-likelihood, each at weight 1, so that
#: the per-term totals give r_MT and log p directly.
EVAL_REWARD: dict[str, Any] = {"rl_tuner_theory": 1.0, "prior_log_likelihood": {"weight": 1.0, "checkpoint": "bach"}}
MODEL_NAMES = {"q": "Q", "psi": "Psi", "g": "G"}


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits.astype(np.float64) - logits.max())
    return z / z.sum()


def evaluate_policy(env: Any, probabilities: Callable[[Mapping[str, np.ndarray]], np.ndarray], *,
                    n: int, test_seed: int, sample_seed: int, greedy: bool = False) -> dict[str, Any]:
    """Play ``n`` pieces (env seeds ``test_seed + k``) choosing tokens from
    ``probabilities(obs) -> (V,)`` — sampled with a generator seeded ``sample_seed``, or
    the most likely one with ``greedy`` — in an env whose reward is :data:`EVAL_REWARD`.

    Returns ``compositions``, ``theory_mean`` (mean r_MT per piece), ``theory_std``,
    ``nll_per_token`` (−mean log p(a|s) under the prior, nats) and ``n_steps``.
    """
    rng = np.random.default_rng(sample_seed)
    comps, theory, loglik, steps = [], [], 0.0, 0
    for k in range(n):
        obs, _ = env.reset(seed=test_seed + k)
        done, total, ll = False, 0.0, 0.0
        while not done:
            p = np.asarray(probabilities(obs), dtype=np.float64)
            action = int(p.argmax()) if greedy else int(rng.choice(p.size, p=p / p.sum()))
            obs, reward, terminated, truncated, info = env.step(action)
            ll += info["reward_terms"]["prior_log_likelihood"]
            total += reward
            steps += 1
            done = terminated or truncated
        comps.append(env.unwrapped.composition)
        theory.append(total - ll)
        loglik += ll
    return {"compositions": comps, "theory_mean": float(np.mean(theory)), "theory_std": float(np.std(theory)),
            "nll_per_token": -loglik / steps, "n_steps": steps}


def run_table(out: str | Path, *, n_timesteps: int = 100_000, n_compositions: int = 100,
              variants: Sequence[str] = ("q", "psi", "g"), seed: int = 0, test_seed: int = 3_000_000,
              hyperparams: Mapping[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Train each variant for ``n_timesteps`` in the paper's setting, evaluate it and the
    prior on ``n_compositions`` held-out pieces, write ``results.json`` and ``table.md``
    into ``out`` and return the results (see the module docstring)."""
    import gymnasium as gym
    import torch

    import musicenv  # noqa: F401  (registers the envs)
    from agents.kl_control import VARIANTS, KLControlError
    from agents.train import TrainConfig, train, write_json
    from musicenv import metrics

    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        raise KLControlError(f"unknown variant(s) {bad}; valid choices: {', '.join(VARIANTS)}")
    if n_compositions < 1 or n_timesteps < 1:
        raise ValueError("n_compositions and n_timesteps must be >= 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    start = time.perf_counter()
    env = gym.make("MusicComposition-v0", observe_prior="bach", reward=EVAL_REWARD, **PAPER_SETTING)

    def prior_probs(obs: Mapping[str, np.ndarray]) -> np.ndarray:
        return _softmax(obs["prior"])

    results: dict[str, Any] = {
        "setting": {**PAPER_SETTING, "steps_per_piece": 32, "reward": "rl_tuner", "n_timesteps": n_timesteps,
                    "n_compositions": n_compositions, "seed": seed, "test_seed": test_seed,
                    "hyperparams": dict(hyperparams or {})},
        "models": {},
    }
    ev = evaluate_policy(env, prior_probs, n=n_compositions, test_seed=test_seed, sample_seed=seed)
    measured = {"Note RNN": metrics.rl_tuner_statistics(ev.pop("compositions"))}
    results["models"]["Note RNN"] = {"sampled": ev, "statistics": measured["Note RNN"]}

    for variant in variants:
        name = MODEL_NAMES[variant]
        t0 = time.perf_counter()
        run = train(TrainConfig(algo=f"rl_tuner_{variant}", env_kwargs=dict(PAPER_SETTING), seed=seed,
                                n_timesteps=n_timesteps, hyperparams=dict(hyperparams or {}),
                                out=str(out / "runs" / variant), eval_freq=0, checkpoint_freq=0,
                                final_episodes=10, baselines=[], progress=progress))
        train_time = time.perf_counter() - t0
        model = run.model
        sampled = evaluate_policy(env, model.action_probabilities, n=n_compositions, test_seed=test_seed,
                                  sample_seed=seed)
        greedy = evaluate_policy(env, model.action_probabilities, n=n_compositions, test_seed=test_seed,
                                 sample_seed=seed, greedy=True)
        greedy.pop("compositions")
        measured[name] = metrics.rl_tuner_statistics(sampled.pop("compositions"))
        results["models"][name] = {"sampled": sampled, "greedy": greedy, "statistics": measured[name],
                                   "train_wall_time_s": train_time, "run_dir": str(run.run_dir)}
    env.close()

    rows = metrics.rl_tuner_table(measured)
    results["table"] = rows
    results["wall_time_s"] = time.perf_counter() - start
    summary = _summary(results)
    text = (f"RL Tuner Table 1, paper setting (C major, 32 steps), {n_timesteps} training steps per model "
            f"(paper: 1,000,000), {n_compositions} sampled pieces per model (paper: 100,000); "
            f"wall time {results['wall_time_s']:.0f} s.\n\n"
            + metrics.format_table(rows) + "\n\n" + summary + "\n")
    write_text(out / "table.md", text)
    write_json(out / "results.json", results)
    return results


def q_versus_prior(out: str | Path, *, n_timesteps: int = 100_000, n_compositions: int = 100, seed: int = 0,
                   test_seed: int = 3_000_000, env_kwargs: Mapping[str, Any] | None = None,
                   hyperparams: Mapping[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """RL Tuner Q (``rl_tuner_q``, its YAML's settings) against the prior in any setting
    of MusicComposition-v0 (default: the env's default, 4 bars and a random key per
    piece): train, then on ``n_compositions`` held-out pieces the mean r_MT per piece and
    the NLL under the prior for Q greedy, Q sampled (softmax of Q) and the prior's own
    samples. Writes ``q_vs_prior.json`` and ``q_vs_prior.md`` into ``out``."""
    import gymnasium as gym
    import torch

    import musicenv  # noqa: F401  (registers the envs)
    from agents.train import TrainConfig, train, write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    start = time.perf_counter()
    env_kwargs = dict(env_kwargs or {})
    run = train(TrainConfig(algo="rl_tuner_q", env_kwargs=env_kwargs, seed=seed, n_timesteps=n_timesteps,
                            hyperparams=dict(hyperparams or {}), out=str(out / "runs" / "q"), eval_freq=0,
                            checkpoint_freq=0, final_episodes=10, baselines=[], progress=progress))
    env = gym.make("MusicComposition-v0", observe_prior="bach", reward=EVAL_REWARD, **env_kwargs)
    kw = {"n": n_compositions, "test_seed": test_seed, "sample_seed": seed}
    models: dict[str, Any] = {
        "Note RNN": {"sampled": evaluate_policy(env, lambda obs: _softmax(obs["prior"]), **kw)},
        "Q": {"sampled": evaluate_policy(env, run.model.action_probabilities, **kw),
              "greedy": evaluate_policy(env, run.model.action_probabilities, greedy=True, **kw)},
    }
    env.close()
    for res in models.values():
        for ev in res.values():
            ev.pop("compositions")
    results = {"setting": {"env_kwargs": env_kwargs, "reward": "rl_tuner", "n_timesteps": n_timesteps,
                           "n_compositions": n_compositions, "seed": seed, "test_seed": test_seed},
               "models": models, "wall_time_s": time.perf_counter() - start}
    text = (f"RL Tuner Q vs the prior, env_kwargs {env_kwargs}, {n_timesteps} training steps, "
            f"{n_compositions} held-out pieces; wall time {results['wall_time_s']:.0f} s.\n\n"
            + _summary(results) + "\n")
    write_text(out / "q_vs_prior.md", text)
    write_json(out / "q_vs_prior.json", results)
    return results


def _summary(results: Mapping[str, Any]) -> str:
    lines = ["| model | play | r_MT per piece (rl_tuner_theory) | NLL under the prior (nats/token) |",
             "|---|---|---:|---:|"]
    for name, res in results["models"].items():
        for mode in ("sampled", "greedy"):
            if mode in res:
                ev = res[mode]
                lines.append(f"| {name} | {mode} | {ev['theory_mean']:.1f} ± {ev['theory_std']:.1f} | "
                             f"{ev['nll_per_token']:.3f} |")
    return "\n".join(lines)


def _cmd(args: argparse.Namespace) -> int:
    from musicenv import metrics

    if args.q_vs_prior:
        res = q_versus_prior(args.out, n_timesteps=args.timesteps, n_compositions=args.compositions, seed=args.seed,
                             progress=not args.no_progress)
        print(_summary(res))
        print(f"\nwall time {res['wall_time_s']:.0f} s; written to {args.out}/q_vs_prior.md and q_vs_prior.json")
        return 0
    res = run_table(args.out, n_timesteps=args.timesteps, n_compositions=args.compositions,
                    variants=args.variants, seed=args.seed, progress=not args.no_progress)
    print(metrics.format_table(res["table"]))
    print()
    print(_summary(res))
    print(f"\nwall time {res['wall_time_s']:.0f} s; written to {args.out}/table.md and results.json")
    return 0 if all(math.isfinite(m["sampled"]["nll_per_token"]) for m in res["models"].values()) else 1


def add_commands(subparsers: Any) -> None:
    """Add ``musicenv rl-tuner-table``."""
    p = subparsers.add_parser("rl-tuner-table", help="reproduce the RL Tuner's Table 1 (train Q, Psi, G; compare)",
                              description=__doc__.split("\n\n")[0])
    _add_arguments(p)
    p.set_defaults(func=_cmd)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="out/rl_tuner_table", help="output directory (default: out/rl_tuner_table)")
    p.add_argument("--timesteps", type=int, default=100_000, help="training steps per model (default: 100000)")
    p.add_argument("--compositions", type=int, default=100, help="sampled pieces per model (default: 100)")
    p.add_argument("--variants", nargs="+", default=["q", "psi", "g"], help="RL Tuner variants (default: q psi g)")
    p.add_argument("--seed", type=int, default=0, help="training and sampling seed (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--q-vs-prior", action="store_true",
                   help="instead of the table: RL Tuner Q against the prior on the default env (4 bars, random key)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.rl_tuner_table", description=__doc__.split("\n\n")[0])
    _add_arguments(parser)
    return _cmd(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
