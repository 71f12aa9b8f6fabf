"""Policies from the prior: SB3 policies whose initial behaviour *is* the note-RNN prior.

The RL Tuner (Jaques et al. 2017) starts its Q-network from the pretrained note RNN, so
that reinforcement learning refines a musically plausible policy instead of discovering
music from uniform noise. The classes here do the same for Stable-Baselines3:

* :class:`PriorActorCriticPolicy` (PPO, A2C): action logits = the prior's
  log p(next token | tokens so far) + a learned residual (SB3's actor MLP and
  ``action_net``, the latter zero-initialised, weights and bias), so the initial policy
  is the prior exactly. :class:`MaskablePriorActorCriticPolicy` is the same for
  sb3-contrib's MaskablePPO.
* :class:`PriorQPolicy` (DQN and the KL-control agents of :mod:`agents.kl_control`):
  Q(s, a) = log p(a | s) under the prior + a residual MLP whose last layer is zero,
  in both ``q_net`` and ``q_net_target``, so the initial greedy policy is the prior's
  most likely token and softmax(Q) is the prior's distribution. ``q_net(obs)`` keeps
  SB3's ``(B, n_actions)`` contract, so ``DQN.train`` works unchanged.
* :class:`NoteRNNExtractor` (features extractor): runs a *trainable* copy of a note-RNN
  checkpoint (default the shipped prior) over the token history of the observation and
  outputs its next-token logits, followed by the other observation blocks flattened.
  With ``prior_source="rnn"`` both policies above take the prior from these logits
  instead of ``obs["prior"]``, so the RNN itself can be fine-tuned by RL
  (``freeze=False``) — the "fine-tune the RNN" option.

Where the prior comes from (``prior_source``):

``"observation"`` (default)
    ``obs["prior"]``, which the environment computes incrementally with a frozen prior
    (``gym.make("MusicComposition-v0", observe_prior=True)``, or ``env_kwargs:
    {observe_prior: true}`` in a training config; one recurrent step per env step).
    Cheap: the policy network is a plain MLP. The prior itself never changes; what RL
    learns is the residual. Use this unless you want to train the RNN's weights.
``"rnn"``
    The logits block of :class:`NoteRNNExtractor` (the default extractor with this
    source). The whole history is re-read by the RNN at every forward pass, since SB3
    policies are stateless, so it needs the env's ``history_length`` to be at least the
    episode length (``env_kwargs: {history_length: 64}`` for the default 4 bars of 4/4)
    and it is much slower. PPO with the ``ppo.yml`` settings (8 envs in DummyVecEnv, 256
    steps each, batch 256, 10 epochs), 4096 env steps, 1 torch thread, 2 cores shared
    with other jobs (load about 2.5): 2.7 s with ``"observation"``, 22 s with ``"rnn"``
    and ``freeze=True`` (8x), 96 s with ``"rnn"`` fine-tuning the RNN (35x).

The network never sees raw log-probabilities (down to -100, they saturate a tanh MLP
and stall learning: PPO on ``theory`` reached 49 instead of 186 in 100k steps); both
extractors pass the ``prior`` block on as probabilities (:class:`PriorObservationExtractor`).

Training (``musicenv train``, :mod:`agents.train`)::

    musicenv train --algo ppo --reward theory --policy agents.policies:PriorActorCriticPolicy \\
        --env-kwargs observe_prior=true

(the same with ``--algo a2c``; ``--algo dqn --policy agents.policies:PriorQPolicy``;
``--algo maskable_ppo --policy agents.policies:MaskablePriorActorCriticPolicy``).
Fine-tuning the RNN: add ``--hyperparams policy_kwargs.prior_source=rnn --env-kwargs
history_length=64`` (``policy_kwargs.features_extractor_kwargs.freeze=true`` keeps it fixed).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import BaseModel, MultiInputActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.dqn.policies import MultiInputPolicy as DQNMultiInputPolicy
from stable_baselines3.dqn.policies import QNetwork
from torch import nn

from agents.models.note_rnn import NoteRNN, prior_path

__all__ = [
    "PRIOR_SOURCES",
    "MaskablePriorActorCriticPolicy",
    "NoteRNNExtractor",
    "PriorActorCriticPolicy",
    "PriorObservationExtractor",
    "PriorQNetwork",
    "PriorQPolicy",
]

#: Where a policy reads the prior's next-token distribution (see module doc).
PRIOR_SOURCES = ("observation", "rnn")


class NoteRNNExtractor(BaseFeaturesExtractor):
    """A trainable note-RNN over the observation's token history, as SB3 features.

    Features (B, V + D): the RNN's next-token logits (what :meth:`NoteRNN.forward` returns
    after the last token placed, relative-pitch heads included), then every observation
    block other than ``history`` flattened, in the observation space's order (``prior``, if
    the env observes it too, as probabilities: see :class:`PriorObservationExtractor`).

    The ``history`` block (H, V + 1) one-hot holds the last H tokens, oldest first, with
    column V (= the RNN's BEGIN) as left padding before the first token. The extractor
    feeds ``[BEGIN, tokens...]`` — the real tokens moved to the front and the shorter rows
    padded on the right, where a causal model cannot see the padding — and reads the
    output after each row's last real token (after BEGIN at the first step). This
    reproduces the env's incremental prior exactly while the window holds the whole
    piece, i.e. when ``history_length`` >= the episode length (64 steps by default:
    ``gym.make(..., history_length=64)``). A full window before the last step (so the
    piece is longer than the window) raises ``ValueError`` at that step unless
    ``allow_truncation=True``, which accepts the RNN seeing only the last H tokens.

    Args:
        observation_space: a Dict with ``history`` (and usually ``progress``, used to
            tell a full window at the end of a piece from a truncated one).
        checkpoint: note-RNN checkpoint to copy: ``"default"`` (the general prior), ``"bach"``,
            ``"small"`` or a path written by :meth:`NoteRNN.save`. Each extractor loads its own
            copy, so training never touches the frozen prior the env and reward terms share.
            The history block holds tokens only, so a conditioned prior (``"default"``) runs
            here on bare tokens (it was trained with conditioning dropout for this); the
            ``"observation"`` source gets the env's key, meter and chords instead.
        freeze: keep the RNN's weights fixed (no gradient, run without autograd).
        allow_truncation: accept windows shorter than the piece (an approximation).

    The RNN always runs without dropout (``eval`` mode), so rollouts and updates see
    the same network and PPO's probability ratios start at 1. Cost: the RNN re-reads up
    to H + 1 tokens per row at every forward pass (see the module doc for a figure).
    """

    def __init__(self, observation_space: spaces.Dict, checkpoint: str | os.PathLike = "default",
                 freeze: bool = False, allow_truncation: bool = False) -> None:
        if not isinstance(observation_space, spaces.Dict) or "history" not in observation_space.spaces:
            keys = list(observation_space.spaces) if isinstance(observation_space, spaces.Dict) else None
            raise ValueError(f"NoteRNNExtractor reads the token history from a Dict observation with a 'history' "
                             f"block (H, V + 1); got {observation_space!r} (keys: {keys})")
        rnn = NoteRNN.load(prior_path(checkpoint))
        history = observation_space.spaces["history"]
        V = rnn.vocab_size
        if len(history.shape) != 2 or history.shape[1] != V + 1:
            raise ValueError(f"the note-RNN checkpoint {checkpoint!r} has {V} tokens, so it needs a history block of "
                             f"shape (H, {V + 1}) (tokens and BEGIN padding); the observation's is {history.shape}")
        others = [k for k in observation_space.spaces if k != "history"]
        extra = sum(int(spaces.flatdim(observation_space.spaces[k])) for k in others)
        super().__init__(observation_space, features_dim=V + extra)
        self.rnn = rnn
        self.checkpoint = str(checkpoint)
        self.freeze, self.allow_truncation = bool(freeze), bool(allow_truncation)
        self.history_length = int(history.shape[0])
        self._others = others
        if self.freeze:
            for p in self.rnn.parameters():
                p.requires_grad_(False)
        self.rnn.eval()

    @property
    def vocab_size(self) -> int:
        """V: the first V features are the RNN's next-token logits."""
        return self.rnn.vocab_size

    def train(self, mode: bool = True) -> NoteRNNExtractor:
        super().train(mode)
        self.rnn.eval()  # no dropout: rollouts and updates must see the same network
        return self

    def next_token_logits(self, history: torch.Tensor, progress: torch.Tensor | None = None) -> torch.Tensor:
        """The RNN's logits (B, V) for the token after the history (B, H, V + 1) one-hot."""
        V, H = self.vocab_size, self.history_length
        tokens = history.argmax(dim=-1)  # (B, H)
        B = tokens.shape[0]
        length = (tokens != V).sum(dim=1)  # real tokens; the padding (V) only leads
        full = length == H
        if not self.allow_truncation and bool(full.any()):
            before_end = full if progress is None else full & (progress.reshape(B) < 1.0)
            if bool(before_end.any()):
                raise ValueError(
                    f"the observation's history window ({H} tokens) is full before the end of the piece, so the "
                    f"note-RNN would miss its beginning; create the env with history_length >= the episode length "
                    f"(e.g. env_kwargs history_length=64 for 4 bars of 16 steps) or pass "
                    f"features_extractor_kwargs allow_truncation=True to accept a window of the last {H} tokens")
        L = int(length.max()) if B else 0
        if L:
            offset = (H - length)[:, None] + torch.arange(L, device=tokens.device)[None, :]
            body = tokens.gather(1, offset.clamp(max=H - 1))
            body = torch.where(offset < H, body, torch.zeros_like(body))  # right padding, never read
            inputs = torch.cat([torch.full((B, 1), V, dtype=torch.long, device=tokens.device), body], dim=1)
        else:
            inputs = torch.full((B, 1), V, dtype=torch.long, device=tokens.device)
        logits, _ = self.rnn(inputs)
        return logits[torch.arange(B, device=tokens.device), length]

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        progress = observations.get("progress")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            logits = self.next_token_logits(observations["history"], progress)
        rest = [(observations[k].exp() if k == "prior" else observations[k]).reshape(logits.shape[0], -1)
                for k in self._others]
        return torch.cat([logits, *rest], dim=1)


class PriorObservationExtractor(BaseFeaturesExtractor):
    """SB3's ``CombinedExtractor`` for Dict observations of flat blocks, with the ``prior``
    block fed to the network as probabilities instead of log-probabilities.

    Features: every block flattened, in the observation space's order; ``prior``
    (log p in [-100, 0]) as ``exp(prior)`` in [0, 1]. Raw log-probabilities of -100 would
    saturate a tanh MLP and stall learning; the policies add the log-probabilities
    themselves to the logits, so the network only needs to know where the prior puts
    its mass. The default extractor of both policies with ``prior_source="observation"``.
    """

    def __init__(self, observation_space: spaces.Dict) -> None:
        if not isinstance(observation_space, spaces.Dict):
            raise ValueError(f"PriorObservationExtractor takes a Dict observation space, got {observation_space!r}")
        super().__init__(observation_space, features_dim=int(spaces.flatdim(observation_space)))
        self._keys = list(observation_space.spaces)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        blocks = [observations[k].exp() if k == "prior" else observations[k] for k in self._keys]
        return torch.cat([b.reshape(b.shape[0], -1) for b in blocks], dim=1)


def _check_prior_source(cls_name: str, prior_source: str, observation_space: spaces.Space, n_actions: int,
                        kwargs: dict[str, Any]) -> None:
    """Validate ``prior_source`` against the observation space and set the default
    features extractor in ``kwargs`` (PriorObservationExtractor / NoteRNNExtractor)."""
    if prior_source not in PRIOR_SOURCES:
        raise ValueError(f"{cls_name}: unknown prior_source {prior_source!r}; valid choices: "
                         f"{', '.join(PRIOR_SOURCES)}")
    if prior_source == "rnn":
        extractor = kwargs.setdefault("features_extractor_class", NoteRNNExtractor)
        if not (isinstance(extractor, type) and issubclass(extractor, NoteRNNExtractor)):
            raise ValueError(f"{cls_name}: prior_source='rnn' takes the prior from NoteRNNExtractor's logits; "
                             f"features_extractor_class must be NoteRNNExtractor (or a subclass), got {extractor!r}")
        return
    kwargs.setdefault("features_extractor_class", PriorObservationExtractor)
    keys = list(observation_space.spaces) if isinstance(observation_space, spaces.Dict) else None
    if keys is None or "prior" not in keys:
        raise ValueError(f"{cls_name} reads the prior's log-probabilities from obs['prior'], which this observation "
                         f"space lacks (keys: {keys}); create the env with observe_prior=True (training config: "
                         f"env_kwargs: {{observe_prior: true}}), or use prior_source='rnn'")
    shape = observation_space.spaces["prior"].shape
    if shape != (n_actions,):
        raise ValueError(f"{cls_name}: obs['prior'] has shape {shape}, but the action space has {n_actions} actions; "
                         "the prior must score exactly the actions")


def _prior_logits(prior_source: str, obs: PyTorchObs, features: torch.Tensor, n_actions: int) -> torch.Tensor:
    """log p(a | s) (B, n_actions) under the prior, up to a constant per row."""
    if prior_source == "observation":
        return obs["prior"].float()  # type: ignore[index]
    return features[:, :n_actions]


class _PriorLogits:
    """The actor-critic methods of :class:`PriorActorCriticPolicy`, shared with the maskable
    variant: SB3's ``forward``, ``evaluate_actions`` and ``get_distribution`` with the
    prior added to the logits (and ``action_masks`` applied when given)."""

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.Discrete, lr_schedule: Any, *args: Any,
                 prior_source: str = "observation", **kwargs: Any) -> None:
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"{type(self).__name__} needs a Discrete action space (one token per step), "
                             f"got {action_space!r}")
        _check_prior_source(type(self).__name__, prior_source, observation_space, int(action_space.n), kwargs)
        self.prior_source = prior_source
        super().__init__(observation_space, action_space, lr_schedule, *args, **kwargs)  # type: ignore[call-arg]

    def _build(self, lr_schedule: Any) -> None:
        # SB3's orthogonal init re-draws every nn.Linear of the features extractor, which
        # would erase the pretrained RNN's output layers: keep the extractors' weights.
        extractors = {id(e): e for e in (self.pi_features_extractor, self.vf_features_extractor)
                      if isinstance(e, NoteRNNExtractor)}
        saved = {k: {n: t.clone() for n, t in e.state_dict().items()} for k, e in extractors.items()}
        super()._build(lr_schedule)  # type: ignore[misc]
        with torch.no_grad():
            for k, e in extractors.items():
                e.load_state_dict(saved[k])
            nn.init.zeros_(self.action_net.weight)  # the residual starts at exactly zero: the policy is the prior
            nn.init.zeros_(self.action_net.bias)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "prior_source": self.prior_source}  # type: ignore[misc]

    def _features(self, obs: PyTorchObs) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.extract_features(obs)
        return features if not self.share_features_extractor else (features, features)

    def _prior_distribution(self, obs: PyTorchObs, pi_features: torch.Tensor,
                            action_masks: Any = None) -> Distribution:
        latent_pi = self.mlp_extractor.forward_actor(pi_features)
        logits = _prior_logits(self.prior_source, obs, pi_features, int(self.action_space.n))
        distribution = self.action_dist.proba_distribution(action_logits=logits + self.action_net(latent_pi))
        if action_masks is not None:  # MaskablePPO
            distribution.apply_masking(action_masks)
        return distribution

    def forward(self, obs: PyTorchObs, deterministic: bool = False,
                action_masks: Any = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pi_features, vf_features = self._features(obs)
        values = self.value_net(self.mlp_extractor.forward_critic(vf_features))
        distribution = self._prior_distribution(obs, pi_features, action_masks)
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = distribution.log_prob(actions)
        return actions.reshape((-1, *self.action_space.shape)), values, log_prob

    def evaluate_actions(self, obs: PyTorchObs, actions: torch.Tensor,
                         action_masks: Any = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        pi_features, vf_features = self._features(obs)
        distribution = self._prior_distribution(obs, pi_features, action_masks)
        values = self.value_net(self.mlp_extractor.forward_critic(vf_features))
        return values, distribution.log_prob(actions), distribution.entropy()

    def get_distribution(self, obs: PyTorchObs, action_masks: Any = None) -> Distribution:
        features = BaseModel.extract_features(self, obs, self.pi_features_extractor)
        return self._prior_distribution(obs, features, action_masks)


class PriorActorCriticPolicy(_PriorLogits, MultiInputActorCriticPolicy):
    """SB3 actor-critic policy (PPO, A2C) whose logits are the prior's plus a learned residual.

    ``logits(s) = prior(s) + action_net(mlp_actor(features(s)))`` with ``action_net``
    zero-initialised (weights and bias), so before training the policy equals the prior
    (KL < 1e-6 nats; the env clips log-probabilities at -100). ``prior(s)`` is
    ``obs["prior"]`` (``prior_source="observation"``, needs ``observe_prior=True``; default
    extractor :class:`PriorObservationExtractor`) or the :class:`NoteRNNExtractor` logits
    (``prior_source="rnn"``, the default extractor then).
    Every other keyword is :class:`~stable_baselines3.common.policies.MultiInputActorCriticPolicy`'s;
    the value function is SB3's unchanged. See the module doc for when to use which.

    Raises:
        ValueError: the observation space has no ``prior`` block (with the
            ``"observation"`` source), ``prior_source`` is unknown, or the ``"rnn"`` source
            is combined with another features extractor.
    """


try:
    from sb3_contrib.common.maskable.policies import MaskableMultiInputActorCriticPolicy
except ImportError:  # pragma: no cover - sb3-contrib is a dependency
    MaskableMultiInputActorCriticPolicy = None

if MaskableMultiInputActorCriticPolicy is not None:
    class MaskablePriorActorCriticPolicy(_PriorLogits, MaskableMultiInputActorCriticPolicy):
        """:class:`PriorActorCriticPolicy` for sb3-contrib's MaskablePPO: the same logits,
        then the env's ``action_masks()`` applied."""


class PriorQNetwork(QNetwork):
    """SB3's DQN Q-network with ``Q(s, a) = log p(a | s) + residual(s)[a]``.

    ``log p`` is the prior's log-probability (``obs["prior"]``, or the log-softmax of
    :class:`NoteRNNExtractor`'s logits with ``prior_source="rnn"``); the residual is SB3's
    MLP (``q_net``) with its last layer zero-initialised. ``forward(obs)`` returns (B, V)
    Q-values as SB3's does, so ``DQN.train`` and subclasses that compute their own targets
    work unchanged.
    """

    def __init__(self, *args: Any, prior_source: str = "observation", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prior_source = prior_source
        last = [m for m in self.q_net if isinstance(m, nn.Linear)][-1]
        with torch.no_grad():
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def prior_log_probs(self, obs: PyTorchObs, features: torch.Tensor) -> torch.Tensor:
        """log p(a | s) (B, V) under the prior."""
        logits = _prior_logits(self.prior_source, obs, features, int(self.action_space.n))
        return logits if self.prior_source == "observation" else torch.log_softmax(logits, dim=-1)

    def forward(self, obs: PyTorchObs) -> torch.Tensor:
        features = self.extract_features(obs, self.features_extractor)
        return self.prior_log_probs(obs, features) + self.q_net(features)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "prior_source": self.prior_source}


class PriorQPolicy(DQNMultiInputPolicy):
    """DQN policy (Dict observations) whose Q-network starts as the prior's log-likelihood.

    ``q_net`` and ``q_net_target`` are :class:`PriorQNetwork`: Q(s, a) = log p(a | s) +
    a residual MLP (``net_arch``) with a zero last layer, so initially softmax(Q(s, .)) is
    the prior's distribution and the greedy action its most likely token, as the RL
    Tuner initialises its Q-network from the note RNN. ``prior_source`` as for
    :class:`PriorActorCriticPolicy`; other keywords are SB3's DQN ``MultiInputPolicy``'s.
    """

    q_net: PriorQNetwork
    q_net_target: PriorQNetwork

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.Discrete, lr_schedule: Any, *args: Any,
                 prior_source: str = "observation", **kwargs: Any) -> None:
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"{type(self).__name__} needs a Discrete action space, got {action_space!r}")
        _check_prior_source(type(self).__name__, prior_source, observation_space, int(action_space.n), kwargs)
        self._prior_source = prior_source  # before super().__init__, which builds the networks
        super().__init__(observation_space, action_space, lr_schedule, *args, **kwargs)

    @property
    def prior_source(self) -> str:
        return self._prior_source

    def make_q_net(self) -> PriorQNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return PriorQNetwork(**net_args, prior_source=self._prior_source).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "prior_source": self._prior_source}
