"""``musicenv train-gan`` and ``musicenv eval-gan``: train and evaluate the melody GAN.

``musicenv train-gan --corpus bach --minutes 9 --out runs/gan-bach`` cuts the corpus's
training split (``MelodyCorpus.split(seed=0)``) into segments of ``--bars`` bars
(:func:`agents.gan.corpus_segments`; in all 12 keys with ``--augment``), trains
(:func:`agents.gan.train`, model selection on the valid split) and writes to the run
directory:

* ``gan.pt``: the best checkpoint (load with ``MelodyGAN.load(path)``);
* ``config.json``: the command's settings and the resolved architecture;
* ``metrics.json``: training summary and history, and the test-split evaluation
  (:func:`agents.gan.evaluate`), also as a Markdown table in ``evaluation.md``;
* ``samples.png`` (a few samples stacked) and ``sample_<i>.png`` piano rolls;
* ``tensorboard/``: losses and validation overlaps (``tensorboard --logdir RUN_DIR``).

``musicenv eval-gan [CHECKPOINT]`` evaluates a checkpoint (default: the shipped one)
the same way and prints the table. torch is imported inside the commands only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from musicenv.files import write_text as _write_text

__all__ = ["add_commands", "run_train_gan", "write_sample_pictures"]


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def write_sample_pictures(model: Any, out_dir: Path, n: int = 4, seed: int = 0, prefix: str = "sample") -> Path:
    """Piano rolls of ``n`` samples: ``<prefix>_<i>.png`` each (musicenv.render.save_png)
    and ``<prefix>s.png`` with all of them stacked. Returns the stacked picture's path."""
    import numpy as np
    from PIL import Image

    from musicenv.composition import Composition
    from musicenv.render import render_rgb, save_png, write_atomically
    from musicenv.theory import Key

    rng = np.random.default_rng(seed)
    keys, chords = model.sample_contexts(n, rng)
    use_chords = "chord" in model.config.conditioning
    tokens = model.generate(n, seed, keys=keys, chords=chords if use_chords else None)
    meter = model.metadata.get("meter", "4/4")
    pictures = []
    for i, line in enumerate(tokens):
        key = Key.from_index(int(keys[i]))
        comp = Composition(line, key, meter, chords[i] if use_chords else None, model.grid,
                           title=f"GAN sample {i + 1} (key given: {key.name})")
        save_png(comp, out_dir / f"{prefix}_{i + 1}.png")
        pictures.append(render_rgb(comp, title=comp.title))
    width = max(p.shape[1] for p in pictures)
    stacked = np.concatenate([np.pad(p, ((0, 4), (0, width - p.shape[1]), (0, 0)), constant_values=255)
                              for p in pictures])
    return write_atomically(out_dir / f"{prefix}s.png", lambda tmp: Image.fromarray(stacked).save(tmp, format="PNG"),
                            what="PNG image")


def run_train_gan(args: argparse.Namespace) -> dict[str, Any]:
    """Train a GAN as ``musicenv train-gan`` does; returns the metrics written."""
    import torch

    from agents import gan
    from musicenv import corpus as corpus_mod
    from musicenv.theory import Meter

    torch.set_num_threads(args.threads)
    from musicenv.files import check_not_shipped, check_out_dir

    out = check_out_dir(args.out, what="--out folder")  # before any work
    for name in ("gan.pt", "config.json", "metrics.json", "evaluation.md"):
        check_not_shipped(out / name, force=getattr(args, "force", False))
    out.mkdir(parents=True, exist_ok=True)
    load_before = _load_average()
    mc = corpus_mod.load(args.corpus, progress=args.progress)
    split = mc.split(seed=args.split_seed)
    train_segs = gan.corpus_segments(split.train, args.bars, args.meter, stride_bars=1)
    valid_segs = gan.corpus_segments(split.valid, args.bars, args.meter, stride_bars=args.bars)
    data = train_segs.augmented() if args.augment else train_segs
    bar = Meter.parse(args.meter).steps_per_bar(mc.grid.steps_per_quarter)
    config = gan.GANConfig(n_pitches=mc.grid.n_pitches, seq_len=args.bars * bar, steps_per_bar=bar,
                           noise_size=args.noise, hidden_size=args.hidden,
                           critic_channels=tuple(args.critic_channels), conditioning=tuple(args.conditioning),
                           relaxation=args.relaxation)
    training = {
        "max_steps": args.steps, "max_minutes": args.minutes, "batch_size": args.batch_size,
        "n_critic": args.n_critic, "gp_weight": args.gp_weight, "lr": args.lr, "betas": [0.5, 0.9],
        "seed": args.seed, "augment": bool(args.augment), "threads": args.threads, "eval_every": args.eval_every,
        "eval_samples": args.eval_samples, "load_average_before": load_before,
        "command": "musicenv " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("musicenv") else None,
    }
    corpus_meta = {
        "name": mc.name or str(args.corpus), "split_seed": args.split_seed, "n_train_pieces": len(split.train),
        "n_train_segments": len(train_segs), "n_training_examples": len(data), "n_valid_segments": len(valid_segs),
        "segments": f"{args.bars} bars of {args.meter} ({config.seq_len} steps), cut at every bar line of the "
                    f"training split's {args.meter} melodies" + (", in all 12 keys" if args.augment else ""),
    }
    model = gan.MelodyGAN(config, mc.grid, reference=train_segs,
                          metadata={"training": training, "corpus": corpus_meta, "meter": args.meter})
    _write_text(out / "config.json", json.dumps({"args": {k: v for k, v in vars(args).items() if k != "func"},
                                                 "config": config.to_dict()}, indent=1, default=str))
    ckpt = out / "gan.pt"
    result = gan.train(model, data, valid_segs, max_steps=args.steps, max_minutes=args.minutes,
                       batch_size=args.batch_size, n_critic=args.n_critic, gp_weight=args.gp_weight, lr=args.lr,
                       eval_every=args.eval_every, eval_samples=args.eval_samples, seed=args.seed,
                       log_dir=out / "tensorboard", checkpoint_path=ckpt, progress=args.progress)
    training.update({"steps": result.steps, "seconds": round(result.seconds, 1), "best_step": result.best_step,
                     "stopped": result.stopped, "load_average_after": _load_average()})
    model.metadata["training"] = training
    model.metadata["metrics"] = {"valid": result.best_valid}
    evaluation = None
    if args.eval_samples_final:
        evaluation = gan.evaluate(model, mc, n=args.eval_samples_final, seed=args.seed, split_seed=args.split_seed)
        model.metadata["metrics"]["test"] = {k: v for k, v in evaluation.get("gan", {}).items()}
    model.save(ckpt)
    metrics = {"training": training, "corpus": corpus_meta, "history": result.history,
               "best_valid": result.best_valid, "evaluation": evaluation,
               "checkpoint": str(ckpt), "checkpoint_bytes": ckpt.stat().st_size}
    _write_text(out / "metrics.json", json.dumps(metrics, indent=1, default=float))
    if evaluation is not None:
        _write_text(out / "evaluation.md", gan.format_evaluation(evaluation) + "\n")
    if args.pictures:
        metrics["samples_png"] = str(write_sample_pictures(model, out, n=args.pictures, seed=args.seed))
    return metrics


def _cmd_train_gan(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    metrics = run_train_gan(args)
    tr = metrics["training"]
    print(f"trained {tr['steps']} generator steps in {tr['seconds']:.0f} s ({tr['stopped']}); best valid "
          f"mean overlap {metrics['best_valid'].get('overlap/mean', float('nan')):.3f} at step {tr['best_step']}; "
          f"load average before/after {tr['load_average_before']} / {tr['load_average_after']}")
    if metrics["evaluation"] is not None:
        from agents.gan import format_evaluation

        print("\nAgainst the test split (" + f"{int(metrics['evaluation']['_reference']['test_segments'])} segments):\n")
        print(format_evaluation(metrics["evaluation"]))
        for name, why in metrics["evaluation"].get("_notes", {}).items():
            print(f"({name}: {why})")
    print(f"\nwrote {args.out}/ (gan.pt {metrics['checkpoint_bytes'] / 1e6:.2f} MB, metrics.json, tensorboard/"
          + (", samples.png" if "samples_png" in metrics else "") + f") in {time.perf_counter() - t0:.0f} s")
    return 0


def _cmd_eval_gan(args: argparse.Namespace) -> int:
    import torch

    from agents import gan

    torch.set_num_threads(args.threads)
    model = gan.MelodyGAN.load(args.checkpoint)
    corpus = args.corpus or model.metadata.get("corpus", {}).get("name", "bach")
    split_seed = model.metadata.get("corpus", {}).get("split_seed", 0)
    results = gan.evaluate(model, corpus, n=args.n, seed=args.seed, split_seed=split_seed)
    print(gan.format_evaluation(results))
    for name, why in results.get("_notes", {}).items():
        print(f"({name}: {why})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        _write_text(Path(args.json), json.dumps(results, indent=1, default=float))
    if args.png:
        path = Path(args.png)
        path.mkdir(parents=True, exist_ok=True)
        print(f"piano rolls: {write_sample_pictures(model, path, n=args.pictures, seed=args.seed)}")
    return 0


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def add_commands(subparsers: Any) -> None:
    """Add ``musicenv train-gan`` and ``musicenv eval-gan`` (see the module doc)."""
    p = subparsers.add_parser(
        "train-gan", help="train the melody GAN (LSTM generator, CNN critic, WGAN-GP) on a corpus",
        description="Train the melody GAN on fixed-length corpus segments; writes gan.pt, metrics.json, "
                    "evaluation.md, samples.png and TensorBoard logs to --out.")
    p.add_argument("--corpus", default="bach", help="corpus name or path for musicenv.corpus.load (default: bach)")
    p.add_argument("--out", default="runs/gan", help="run directory (default: runs/gan)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the corpus split (default: 0)")
    p.add_argument("--steps", type=_positive_int, default=20000, help="generator steps at most (default: 20000)")
    p.add_argument("--minutes", type=float, default=9.0, help="wall-time budget in minutes (default: 9)")
    p.add_argument("--bars", type=_positive_int, default=4, help="bars per segment (default: 4)")
    p.add_argument("--meter", default="4/4", help="meter of the melodies used (default: 4/4)")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="segments per batch (default: 64)")
    p.add_argument("--force", action="store_true", help="allow writing over files shipped inside the package")
    p.add_argument("--n-critic", type=_positive_int, default=5, help="critic steps per generator step (default: 5)")
    p.add_argument("--gp-weight", type=float, default=10.0, help="gradient-penalty weight (default: 10)")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate of both networks (default: 2e-4)")
    p.add_argument("--hidden", type=_positive_int, default=128, help="generator LSTM units (default: 128)")
    p.add_argument("--noise", type=_positive_int, default=32, help="noise size (default: 32)")
    p.add_argument("--critic-channels", type=_positive_int, nargs="+", default=[32, 64, 64, 64],
                   help="channels of the critic's convolutions (default: 32 64 64 64)")
    p.add_argument("--conditioning", nargs="*", default=["key"], choices=["key", "chord"],
                   help="context given to both networks (default: key)")
    p.add_argument("--relaxation", default="st_gumbel", choices=["st_gumbel", "softmax"],
                   help="how discrete choices pass gradients (default: st_gumbel)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=False,
                   help="also train on all 12 transpositions (default: no; see agents.gan's module doc)")
    p.add_argument("--eval-every", type=int, default=100, help="generator steps between validations (default: 100)")
    p.add_argument("--eval-samples", type=_positive_int, default=128, help="samples per validation (default: 128)")
    p.add_argument("--eval-samples-final", type=int, default=200,
                   help="samples per set in the final test-split evaluation, 0 to skip (default: 200)")
    p.add_argument("--pictures", type=int, default=4, help="sample piano rolls to write, 0 for none (default: 4)")
    p.add_argument("--threads", type=_positive_int, default=2, help="torch threads (default: 2)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    p.set_defaults(func=_cmd_train_gan)

    p = subparsers.add_parser("eval-gan", help="evaluate a GAN checkpoint against the corpus's test split",
                              description="Compare GAN samples, random baselines, the note-RNN prior and the valid "
                                          "split with the test split (overlap of histograms, diversity).")
    p.add_argument("checkpoint", nargs="?", default=None, help="checkpoint (default: the shipped GAN)")
    p.add_argument("--corpus", default=None, help="corpus (default: the checkpoint's)")
    p.add_argument("--n", type=_positive_int, default=200, help="samples per set (default: 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples evaluated (default: 0)")
    p.add_argument("--json", help="also write the results as JSON here")
    p.add_argument("--png", metavar="DIR", help="write sample piano rolls to DIR")
    p.add_argument("--pictures", type=_positive_int, default=4, help="piano rolls with --png (default: 4)")
    p.add_argument("--threads", type=_positive_int, default=2, help="torch threads (default: 2)")
    p.set_defaults(func=_cmd_eval_gan)
