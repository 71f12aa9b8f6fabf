"""The model layer: the learned models that environments and reward terms use at run time.

Torch, but no Stable-Baselines3 and no training code; training (:mod:`agents.train`,
:mod:`agents.note_rnn`'s and :mod:`agents.gan`'s training loops, the CLIs) sits above
it, and ``musicenv`` and ``rewards`` sit below it and import it only by name, on first
use: the learned reward terms through ``rewards.LAZY_TERMS``, the ``prior`` and ``gan``
compose sources through :func:`musicenv.compose.register_source` entry points, and
``observe_prior`` through :func:`musicenv.envs.batched` importing
:mod:`agents.models.prior` when an env asks for it. Importing this package imports
nothing (no torch).

Modules:

- :mod:`~agents.models.checkpoint`: the checkpoint envelope (``torch.load(weights_only=True)``)
  and one frozen copy per checkpoint file.
- :mod:`~agents.models.note_rnn`: :class:`NoteRNN` (LSTM, GRU or transformer), its
  config, the shipped priors and :func:`load_prior`.
- :mod:`~agents.models.stepper`: the compiled one-token LSTM step used while playing.
- :mod:`~agents.models.prior`: :class:`PriorTracker` (the prior's incremental state
  along a batch of episodes), the ``prior_log_likelihood`` reward term, the ``prior``
  compose source.
- :mod:`~agents.models.gan`: :class:`MelodyGAN` (generator and critic), its config,
  channels and the critic update.
- :mod:`~agents.models.discriminator`: the ``discriminator`` reward term and the
  ``gan`` compose source.
"""

#: Where the shipped weights live (``agents/pretrained/``).
from pathlib import Path as _Path

PRETRAINED_DIR = _Path(__file__).resolve().parent.parent / "pretrained"
