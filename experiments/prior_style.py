"""Style as a control: KL-PPO toward the default prior in a chosen style, and the
statistics of the pieces it writes.

For each style (``bach``, ``essen``, ``oneills`` or ``none``), trains
``agents.kl_control:KLPPO`` (``agents/hyperparams/kl_ppo.yml``, reward ``theory``) with the
env's prior observation conditioned on that style (``observe_prior={"checkpoint":
"default", "style": ...}``), then samples 64 pieces (env seeds 1000..1063) and reports
:func:`agents.prior_cli.melody_statistics`: notes in key, strong-beat chord tones, note
length, |interval| and notes per bar, to compare with the collections' own figures
(README, "The general melody prior").

    python -m experiments.prior_style --steps 30000 --kl-coef 0.5 --styles essen oneills bach none
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

__all__ = ["run", "main"]


def run(styles: list[str], steps: int, kl_coef: float, out: Path, pieces: int = 64, seed: int = 0) -> dict[str, Any]:
    """Train and sample per style; returns style -> statistics (and wall seconds)."""
    import gymnasium as gym
    import torch

    import musicenv  # noqa: F401  (registers the envs)
    from agents.prior_cli import melody_statistics
    from agents.train import TrainConfig, train

    torch.set_num_threads(1)
    results: dict[str, Any] = {}
    for style in styles:
        t0 = time.perf_counter()
        kw = {"observe_prior": {"checkpoint": "default", "style": None if style == "none" else style}}
        res = train(TrainConfig(algo="kl_ppo", env_kwargs=kw, seed=seed, n_timesteps=steps, out=str(out / f"kl_{style}"),
                                eval_freq=0, checkpoint_freq=0, final_episodes=1, baselines=[], progress=False,
                                hyperparams={"kl_coef": kl_coef}))
        env = gym.make("MusicComposition-v0", **kw)
        comps = []
        for i in range(pieces):
            obs, _ = env.reset(seed=1000 + i)
            done = False
            while not done:
                action, _ = res.model.predict(obs, deterministic=False)
                obs, _, terminated, truncated, _ = env.step(int(action))
                done = terminated or truncated
            comps.append(env.unwrapped.composition)
        env.close()
        results[style] = {**melody_statistics(comps), "seconds": time.perf_counter() - t0}
        print(style, results[style], flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.prior_style", description=__doc__.split("\n\n")[0])
    p.add_argument("--styles", nargs="+", default=["essen", "oneills", "bach", "none"],
                   choices=["bach", "essen", "oneills", "none"])
    p.add_argument("--steps", type=int, default=30000, help="KL-PPO env steps per style (default: 30000)")
    p.add_argument("--kl-coef", type=float, default=0.5, help="KL penalty weight (default: 0.5)")
    p.add_argument("--out", default="runs/prior_style", help="run folder (default: runs/prior_style)")
    p.add_argument("--json", default=None, help="also write the statistics here")
    args = p.parse_args(argv)
    results = run(args.styles, args.steps, args.kl_coef, Path(args.out))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
