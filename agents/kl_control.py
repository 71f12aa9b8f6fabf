"""KL control towards the note-RNN prior: the RL Tuner's Q, Ψ and G learning, and PPO
with a KL penalty.

Jaques et al. 2017 ("Tuning Recurrent Neural Networks with Reinforcement Learning",
later "Sequence Tutor", arXiv:1611.02796) fine-tune a melody model with RL while
keeping it close to a frozen note-RNN prior p(a|s). With the music-theory reward r_MT
and c = 0.5 they compare three ways of doing so (equations 4, 11 and 13; see
``RL_TUNER.md`` §3):

======== ============================ ============================================== ==========================
variant  reward r(s, a)               TD target y                                     policy
======== ============================ ============================================== ==========================
``q``    r_MT/c + log p(a|s)          r + γ max_a' Q⁻(s', a')                          argmax_a Q(s, a)
``psi``  r_MT/c + log p(a|s)          r + γ log Σ_a' exp Ψ⁻(s', a')                    π(a|s) ∝ exp Ψ(s, a)
``g``    r_MT/c                       r + γ log Σ_a' p(a'|s') exp G⁻(s', a')           π(a|s) ∝ p(a|s) exp G(s, a)
======== ============================ ============================================== ==========================

(⁻: the target network; the bootstrap term is dropped at the end of an episode.)

:class:`RLTuner` is Stable-Baselines3's DQN with the target and the action choice of
each variant; :class:`RLTunerQ`, :class:`RLTunerPsi`, :class:`RLTunerG` fix the
variant for registration (``musicenv train --algo rl_tuner_q|rl_tuner_psi|rl_tuner_g``).
:class:`KLPPO` is PPO with the penalty β·KL(π(·|s) ‖ p(·|s)) in its loss.

Where the prior comes from
--------------------------
The environment must be made with ``observe_prior=True``: the observation block
``obs["prior"]`` is the frozen prior's log p(· | every token so far), (V,) float32,
clipped to [-100, 0]. The env reward is meant to be the ``rl_tuner`` preset
(``rl_tuner_theory`` × 2 + ``prior_log_likelihood`` × 1, i.e. r_MT/c + log p(a|s) with
c = 0.5), so that all three variants — and plain DQN or PPO — are trained and
evaluated on one and the same reward. The replay buffer stores each transition's
observation, so log p(a|s) = obs["prior"][a] of the transition's own observation is
always at hand: G subtracts it from the env reward (its reward is r_MT/c alone), and
G's target and action choice read obs["prior"] of s' and s. With a reward that does
*not* contain log p(a|s) (e.g. ``rl_tuner_theory`` with weight 2), pass
``prior_in_reward=False``: Q and Ψ then add obs["prior"][a] to it and G uses it as is.
(The env's ``prior_log_likelihood`` term is not clipped; obs["prior"] is, at -100,
so the two differ only for tokens of probability below e^-100.)

Exploration
-----------
``exploration="epsilon"`` (the default for Q, as in SB3 and the paper's reported
runs): with probability ε (SB3's ``exploration_*`` schedule) a uniformly random
token, else the greedy one. ``exploration="boltzmann"`` (the default for Ψ and G):
with probability ε a random token, else a token *sampled* from the variant's policy
(softmax of Q; π ∝ exp Ψ; π ∝ p·exp G) — Ψ and G define stochastic policies, and
sampling from them is the exploration their derivation assumes. The action that is
stored in the replay buffer is the one played (the reference code stored the argmax
instead, RL_TUNER.md D13). ``predict(deterministic=True)`` plays the policy's most
likely token; :meth:`RLTuner.action_probabilities` gives the softmax distribution the
paper samples Table 1's compositions from.

Networks
--------
Any SB3 DQN policy for Dict observations. The shipped YAMLs (and the registered
defaults) give Q and Ψ ``agents.policies:PriorQPolicy``: Q(s, a) = obs["prior"][a] + a
residual MLP whose last layer starts at zero, so the initial greedy policy is the
prior's most likely token and softmax(Ψ) is exactly the prior — the paper initialises
its Q-network from the note-RNN. G uses SB3's ``MultiInputPolicy``, whose outputs start
near 0, so π ∝ p·exp G starts near the prior; a prior-initialised G would start at
π ∝ p² (which is what the reference code did).

Departures from the paper: SB3's Huber loss instead of the squared TD error, a global
gradient-norm clip instead of a per-tensor one, terminal transitions do not bootstrap
(D14), and the network is an MLP over the observation (which carries obs["prior"]) on
top of the frozen prior instead of a fine-tuned copy of the note-RNN's LSTM.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN, PPO
from torch.nn import functional as F

__all__ = ["KLPPO", "PRIOR_KEY", "RLTuner", "RLTunerG", "RLTunerPsi", "RLTunerQ", "VARIANTS", "KLControlError",
           "check_prior_space"]

#: Observation key of the prior's log-probabilities (``observe_prior=True``).
PRIOR_KEY = "prior"
#: The RL Tuner variants, by name.
VARIANTS: tuple[str, ...] = ("q", "psi", "g")
EXPLORATIONS: tuple[str, ...] = ("epsilon", "boltzmann")


class KLControlError(ValueError):
    """A KL-control agent was configured wrongly (variant, exploration, observation space)."""


def check_prior_space(observation_space: spaces.Space, action_space: spaces.Space, who: str) -> None:
    """Raise :class:`KLControlError` unless the observation is a Dict with a ``prior``
    block of one log-probability per action."""
    if not isinstance(observation_space, spaces.Dict) or PRIOR_KEY not in observation_space.spaces:
        keys = list(observation_space.spaces) if isinstance(observation_space, spaces.Dict) else observation_space
        raise KLControlError(
            f"{who} needs the prior's log-probabilities in the observation (obs[{PRIOR_KEY!r}]), got {keys}; "
            "make the env with observe_prior=True (musicenv train: --env-kwargs observe_prior=true)")
    if not isinstance(action_space, spaces.Discrete):
        raise KLControlError(f"{who} needs a Discrete action space, got {action_space}")
    shape = observation_space.spaces[PRIOR_KEY].shape
    if shape != (int(action_space.n),):
        raise KLControlError(f"{who}: obs[{PRIOR_KEY!r}] has shape {shape}, expected ({int(action_space.n)},) "
                             "(one log-probability per action)")


def _with_signature(init: Callable, base: Callable, extra: dict[str, Any], drop: tuple[str, ...] = ()) -> Callable:
    """Give ``init`` (``(self, policy, env, <extra>, **kwargs)``) the base class's keyword
    signature plus ``extra``, so ``agents.train`` can validate YAML keys against it."""
    params = [p for name, p in inspect.signature(base).parameters.items() if name not in drop]
    first_kw = next(i for i, p in enumerate(params) if p.default is not inspect.Parameter.empty)
    added = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
             for name, default in extra.items()]
    init.__signature__ = inspect.Signature(params[:first_kw] + added + params[first_kw:])  # type: ignore[attr-defined]
    return init


# ----------------------------------------------------------------------------- RL Tuner
class RLTuner(DQN):
    """SB3 DQN with the RL Tuner's KL-control targets (module docstring has the table).

    Args:
        variant: ``"q"`` (default), ``"psi"`` or ``"g"``.
        exploration: ``"epsilon"`` or ``"boltzmann"``; default ``"epsilon"`` for Q and
            ``"boltzmann"`` for Ψ and G.
        prior_in_reward: the env reward already contains log p(a|s) with weight 1 (the
            ``rl_tuner`` preset; default). False: it is r_MT/c alone.
        Every other keyword is DQN's (``gamma``, ``learning_rate``, ``exploration_*``,
        ``tau``, ...). The observation must carry ``obs["prior"]`` (``observe_prior=True``).
    """

    default_variant: ClassVar[str | None] = None

    def __init__(self, policy: Any, env: Any, variant: str | None = None, exploration: str | None = None,
                 prior_in_reward: bool = True, **kwargs: Any) -> None:
        if variant is None:
            variant = self.default_variant or "q"
        if variant not in VARIANTS:
            raise KLControlError(f"unknown RL Tuner variant {variant!r}; valid choices: {', '.join(VARIANTS)}")
        if self.default_variant is not None and variant != self.default_variant:
            raise KLControlError(f"{type(self).__name__} is the {self.default_variant!r} variant; "
                                 f"use RLTuner(variant={variant!r}) for another")
        if exploration is None:
            exploration = "epsilon" if variant == "q" else "boltzmann"
        if exploration not in EXPLORATIONS:
            raise KLControlError(f"unknown exploration {exploration!r}; valid choices: {', '.join(EXPLORATIONS)}")
        if not isinstance(prior_in_reward, bool):
            raise KLControlError(f"prior_in_reward must be true or false, got {prior_in_reward!r}")
        self.variant, self.exploration, self.prior_in_reward = variant, exploration, prior_in_reward
        super().__init__(policy, env, **kwargs)

    def _setup_model(self) -> None:
        # Runs on construction and on load, once the spaces are known.
        check_prior_space(self.observation_space, self.action_space, f"RL Tuner ({self.variant})")
        super()._setup_model()

    # -- the variant's mathematics -------------------------------------------------
    def policy_logits(self, obs: dict[str, th.Tensor], q_values: th.Tensor | None = None) -> th.Tensor:
        """(B, V) logits of the variant's policy: Q or Ψ themselves; log p(a|s) + G(s, a) for G."""
        values = self.q_net(obs) if q_values is None else q_values
        return values + obs[PRIOR_KEY] if self.variant == "g" else values

    def variant_rewards(self, rewards: th.Tensor, obs: dict[str, th.Tensor], actions: th.Tensor) -> th.Tensor:
        """(B, 1) reward of the variant from the env's (B, 1) reward: r_MT/c + log p(a|s)
        for Q and Ψ, r_MT/c for G, with log p(a|s) = obs["prior"][a]."""
        log_p = th.gather(obs[PRIOR_KEY], 1, actions.long())
        if self.variant == "g":
            return rewards - log_p if self.prior_in_reward else rewards
        return rewards if self.prior_in_reward else rewards + log_p

    def next_state_values(self, next_q_values: th.Tensor, next_obs: dict[str, th.Tensor]) -> th.Tensor:
        """(B, 1) value of s' from the target network's (B, V) outputs: max_a' Q⁻ (Q),
        log Σ_a' exp Ψ⁻ (Ψ), log Σ_a' p(a'|s') exp G⁻ (G)."""
        if self.variant == "q":
            v = next_q_values.max(dim=1).values
        elif self.variant == "psi":
            v = th.logsumexp(next_q_values, dim=1)
        else:
            v = th.logsumexp(next_q_values + next_obs[PRIOR_KEY], dim=1)
        return v.reshape(-1, 1)

    def td_target(self, replay_data: Any) -> th.Tensor:
        """(B, 1) TD target y = r + γ (1 - done) V⁻(s') of a replay sample (SB3's
        ``DictReplayBufferSamples``)."""
        discounts = getattr(replay_data, "discounts", None)
        discounts = discounts if discounts is not None else self.gamma
        with th.no_grad():
            next_v = self.next_state_values(self.q_net_target(replay_data.next_observations),
                                            replay_data.next_observations)
            rewards = self.variant_rewards(replay_data.rewards, replay_data.observations, replay_data.actions)
            return rewards + (1 - replay_data.dones) * discounts * next_v

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        # SB3 2.x DQN.train (stable_baselines3/dqn/dqn.py), with td_target in place of
        # the max-Q target; loss, clipping and logging unchanged.
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        losses = []
        for _ in range(gradient_steps):
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            target = self.td_target(replay_data)
            current = th.gather(self.q_net(replay_data.observations), dim=1, index=replay_data.actions.long())
            loss = F.smooth_l1_loss(current, target)
            losses.append(loss.item())
            self.policy.optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", float(np.mean(losses)))

    # -- acting ----------------------------------------------------------------------
    def action_probabilities(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """(B, V) (or (V,) for one observation) softmax of :meth:`policy_logits`: the
        policy of Ψ and G, and the Boltzmann policy of Q that the paper samples from."""
        self.policy.set_training_mode(False)
        obs, vectorized = self.policy.obs_to_tensor(observation)
        with th.no_grad():
            probs = th.softmax(self.policy_logits(obs), dim=1).cpu().numpy()
        return probs if vectorized else probs[0]

    def predict(self, observation: Any, state: tuple[np.ndarray, ...] | None = None,
                episode_start: np.ndarray | None = None,
                deterministic: bool = False) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """The greedy token (``deterministic``) or, with probability ε a random one and
        otherwise the greedy (``exploration="epsilon"``) or a sampled one (``"boltzmann"``)."""
        self.policy.set_training_mode(False)
        obs, vectorized = self.policy.obs_to_tensor(observation)
        n = next(iter(obs.values())).shape[0]
        if not deterministic and np.random.rand() < self.exploration_rate:
            actions = np.array([self.action_space.sample() for _ in range(n)])
        else:
            with th.no_grad():
                logits = self.policy_logits(obs)
                if deterministic or self.exploration == "epsilon":
                    chosen = logits.argmax(dim=1)
                else:
                    chosen = th.distributions.Categorical(logits=logits).sample()
            actions = chosen.cpu().numpy()
        actions = actions.reshape((-1, *self.action_space.shape))
        return (actions if vectorized else actions[0]), state


_with_signature(RLTuner.__init__, DQN.__init__, {"variant": None, "exploration": None, "prior_in_reward": True})


class RLTunerQ(RLTuner):
    """The RL Tuner's Q-learning (eq. 4): :class:`RLTuner` with ``variant="q"``."""

    default_variant = "q"


class RLTunerPsi(RLTuner):
    """The RL Tuner's Ψ-learning (eq. 11): :class:`RLTuner` with ``variant="psi"``."""

    default_variant = "psi"


class RLTunerG(RLTuner):
    """The RL Tuner's G-learning (eq. 13): :class:`RLTuner` with ``variant="g"``."""

    default_variant = "g"


# ------------------------------------------------------------------------------ KL-PPO
def kl_to_prior(distribution: Any, obs: dict[str, th.Tensor]) -> th.Tensor:
    """(B,) KL(π(·|s) ‖ p(·|s)) = Σ_a π(a|s) (log π(a|s) − log p(a|s)) of a Categorical
    policy distribution (SB3's ``CategoricalDistribution``) to the prior in obs["prior"]
    (renormalised with a log-softmax, as the clipping at -100 may leave it a hair off)."""
    log_pi = th.log_softmax(distribution.distribution.logits, dim=1)
    log_p = th.log_softmax(obs[PRIOR_KEY], dim=1)
    return (log_pi.exp() * (log_pi - log_p)).sum(dim=1)


class KLPPO(PPO):
    """PPO with a KL penalty to the prior: loss = L_PPO + β · mean_s KL(π(·|s) ‖ p(·|s)).

    Mechanism: PPO's loss already holds an entropy term, −ent_coef · mean H(π(·|s)), and
    H(π) = log V − KL(π ‖ uniform): the entropy bonus *is* a KL penalty towards the
    uniform distribution. KLPPO puts the prior in the uniform's place — the policy's
    ``evaluate_actions`` (used only in PPO's loss) returns −KL(π ‖ p) where PPO expects
    the entropy, and ``ent_coef`` is set to β = ``kl_coef`` — so PPO's own ``train``
    minimises L_clip + β·KL + vf_coef·L_vf unchanged. (Hence ``ent_coef`` is not a
    keyword here, and the logged ``train/entropy_loss`` is β-free mean KL to the prior.)
    The prior is obs["prior"] (make the env with ``observe_prior=True``).

    With ``agents.policies:PriorActorCriticPolicy`` (the registered default and the
    shipped YAML's) the policy starts as the prior, so the penalty starts at 0.

    Args:
        kl_coef: β ≥ 0. Every other keyword is PPO's.
    """

    def __init__(self, policy: Any, env: Any, kl_coef: float = 0.1, **kwargs: Any) -> None:
        if "ent_coef" in kwargs:
            raise KLControlError("KLPPO sets ent_coef itself (the entropy term carries the KL penalty); "
                                 "give kl_coef instead")
        if isinstance(kl_coef, bool) or not isinstance(kl_coef, (int, float)) or not kl_coef >= 0:
            raise KLControlError(f"kl_coef must be a number >= 0, got {kl_coef!r}")
        self.kl_coef = float(kl_coef)
        super().__init__(policy, env, ent_coef=self.kl_coef, **kwargs)

    def _setup_model(self) -> None:
        check_prior_space(self.observation_space, self.action_space, "KLPPO")
        super()._setup_model()
        self.policy.evaluate_actions = _KLEvaluate(self.policy)


class _KLEvaluate:
    """``policy.evaluate_actions`` returning −KL(π ‖ prior) in the entropy's place."""

    def __init__(self, policy: Any) -> None:
        self.evaluate = policy.evaluate_actions  # the bound original
        self.policy = policy

    def __call__(self, obs: dict[str, th.Tensor], actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        values, log_prob, _entropy = self.evaluate(obs, actions)
        # A second actor pass for the full distribution: evaluate_actions returns only
        # what PPO needs, and re-implementing it would tie this to one policy class.
        kl = kl_to_prior(self.policy.get_distribution(obs), obs)
        return values, log_prob, -kl


_with_signature(KLPPO.__init__, PPO.__init__, {"kl_coef": 0.1}, drop=("ent_coef",))
