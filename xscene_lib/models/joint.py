"""The book's joint model: id embeddings plus projected text features, one tower shared by all scenarios and
adapted to each, trained on all scenarios together (the article's section 3.2.3, made concrete).

    item i:                 v_i = P x_i + e_i                  x_i: frozen text vector; e_i = 0 if i not in training
    user u in scenario s:   z   = e_u + mean_{j in H(u)} P x_j + c_s      H(u): u's training items, all scenarios
                            h   = z + W2 adapt_s(relu(W1 z + b1))
    score_s(u, i) = cos(h, v_i) / temperature

P (a linear map d_text -> dim) is learned, so gradients reach the text side of users and items alike; the
history mean is taken before P, which is the same because the mean's weights sum to one. Scenario adaptation
(`adaptation`) makes the shared user tower depend on the scenario:

- "film": adapt_s(a) = gamma_s * a + beta_s on the hidden activations (gamma_s starts at 1, beta_s at 0);
- "star": as in STAR, W1 becomes W1 * W1_s and b1 becomes b1 + b1_s, element-wise (W1_s starts at 1, b1_s at 0);
- None: no adaptation and no scenario embedding c_s, so the scores are the same in every scenario.

The item side has no scenario input, so one item matrix serves every user in every scenario.

Training: every interaction (u, i, s) of every scenario, in shuffled batches. With loss="softmax" each user's
positive competes with the other positives of the batch (in-batch sampled softmax); popular items turn up as
in-batch negatives more often, which logQ correction undoes by subtracting log q_i (q_i: i's share of the
training interactions) from every logit. With loss="bpr" the positive competes with one uniformly drawn item.
`scenario_loss_weights` scales each scenario's rows in the loss. With distributed=True (under torchrun) each
process computes the users of its share of the batch against every positive of the batch, so the in-batch
softmax sees the same negatives as on one process (see xscene_lib.training.distributed).

Items never seen in training get no id part (e_i = 0): with text they are scored from their text alone;
without text (use_text=False) their vector is zero, their cosine is 0 and so is their score, in every
scenario.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from xscene_lib.models.fitting import (history_means, run_key, scores_in_chunks, seen_keys, text_switch,
                                       uniform_negatives, validation_ndcg, worker_group)
from xscene_lib.training.loop import seeded_generator, train_module
from xscene_lib.models.two_tower import TwoTowerRecommender
from xscene_lib.data.validation import DataError, check_choice, check_flag, check_number, check_positive_int

ADAPTATIONS = ("film", "star", None)
LOSSES = ("softmax", "bpr")
ID_INIT_STD = 0.1


def in_batch_softmax(h: torch.Tensor, item: torch.Tensor, mine: slice,
                     item_vectors: Callable[[torch.Tensor], torch.Tensor], log_q: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """Each row's loss of its positive against the batch's other positives, logQ-corrected (sampled softmax).

    Row r's logits are cos(h_r, v_k) / temperature - log q_k over the positives k of all B rows, except other
    rows' copies of r's own item. Computed with one column per distinct item whose logit is raised by log(its
    count in the batch), and r's own item counted once: the same softmax in fewer columns.
    shape: h (b, dim), the rows `mine` of item (B,) -> (b,).
    """
    positives, column, count = torch.unique(item, return_inverse=True, return_counts=True)  # (U,), (B,), (U,)
    log_count = torch.log(count.to(h.dtype))  # (U,)
    logits = F.linear(h / temperature, item_vectors(positives), log_count - log_q[positives])  # (b, U)
    own = column[mine][:, None]  # (b, 1): each row's own item
    logits = logits.scatter_add(1, own, -log_count[own])  # the own item once
    return F.cross_entropy(logits, own[:, 0], reduction="none")  # (b,)


class _Tower(torch.nn.Module):
    """z -> z + W2 adapt_s(relu(W1 z + b1)): a residual block shared by all scenarios, adapted to each."""

    def __init__(self, dim: int, n_scenarios: int, adaptation: str | None) -> None:
        super().__init__()
        self.adaptation = adaptation
        self.hidden = torch.nn.Linear(dim, dim)  # W1, b1
        self.output = torch.nn.Linear(dim, dim)  # W2
        if adaptation == "film":
            self.gamma = torch.nn.Parameter(torch.ones(n_scenarios, dim))  # (S, dim)
            self.beta = torch.nn.Parameter(torch.zeros(n_scenarios, dim))  # (S, dim)
        elif adaptation == "star":
            self.scenario_weight = torch.nn.Parameter(torch.ones(n_scenarios, dim, dim))  # (S, dim, dim)
            self.scenario_bias = torch.nn.Parameter(torch.zeros(n_scenarios, dim))  # (S, dim)

    def forward(self, z: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        """shape: z (B, dim), scenario (B,) -> (B, dim)."""
        if self.adaptation == "star":
            weights = self.hidden.weight * self.scenario_weight  # (S, dim, dim)
            biases = self.hidden.bias + self.scenario_bias  # (S, dim)
            every = torch.einsum("bd,sed->sbe", z, weights) + biases[:, None, :]  # (S, B, dim)
            hidden = every[scenario, torch.arange(len(z))]  # (B, dim), each row in its own scenario
        else:
            hidden = self.hidden(z)  # (B, dim)
        hidden = F.relu(hidden)
        if self.adaptation == "film":
            # F.embedding, not self.gamma[scenario]: its gradient sums rows in a fixed order, so runs repeat exactly
            hidden = F.embedding(scenario, self.gamma) * hidden + F.embedding(scenario, self.beta)  # (B, dim)
        return z + self.output(hidden)


class _JointNet(torch.nn.Module):
    """User and item towers of the joint model; the frozen text lives in buffers that are not checkpointed."""

    def __init__(self, n_users: int, n_scenarios: int, dim: int, adaptation: str | None, use_id: bool,
                 item_text: np.ndarray | None, history_text: np.ndarray | None, known_items: np.ndarray) -> None:
        super().__init__()
        self.projection = None if item_text is None else torch.nn.Linear(item_text.shape[1], dim)  # P
        if item_text is not None:
            self.register_buffer("item_text", torch.tensor(item_text), persistent=False)  # (n_items, d_text)
            self.register_buffer("history_text", torch.tensor(history_text), persistent=False)  # (n_users, d_text)
        self.user_id = self.item_id = None
        if use_id:
            self.user_id = torch.nn.Embedding(n_users, dim)  # e_u
            self.item_id = torch.nn.Embedding(len(known_items), dim)  # e_i
            torch.nn.init.normal_(self.user_id.weight, std=ID_INIT_STD)
            torch.nn.init.normal_(self.item_id.weight, std=ID_INIT_STD)
            known = torch.as_tensor(known_items, dtype=torch.float32)[:, None]
            self.register_buffer("known", known, persistent=False)  # (n_items, 1): 1 if in training
        self.scenario = None
        if adaptation is not None:
            self.scenario = torch.nn.Embedding(n_scenarios, dim)  # c_s
            torch.nn.init.zeros_(self.scenario.weight)
        self.tower = _Tower(dim, n_scenarios, adaptation)

    def items(self, item: torch.Tensor | None = None) -> torch.Tensor:
        """v_i for the given items, or all. shape: (B, dim) or (n_items, dim)."""
        parts = []
        if self.projection is not None:
            parts.append(self.projection(self.item_text if item is None else self.item_text[item]))
        if self.item_id is not None:
            parts.append(self.item_id.weight * self.known if item is None else self.item_id(item) * self.known[item])
        return torch.stack(parts).sum(dim=0)

    def users(self, user: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        """h, the user in the scenario. shape: user (B,), scenario (B,) -> (B, dim)."""
        z = 0.0
        if self.projection is not None:
            z = z + self.projection(self.history_text[user])  # (B, dim): mean of P x_j over the history
        if self.user_id is not None:
            z = z + self.user_id(user)
        if self.scenario is not None:
            z = z + self.scenario(scenario)
        return self.tower(z, scenario)


class JointModel(TwoTowerRecommender):
    """Ids plus projected text, a scenario-adapted shared tower, trained on all scenarios together."""

    def __init__(self, dim: int = 64, use_text: bool = True, use_id: bool = True, adaptation: str | None = "film",
                 loss: str = "softmax", temperature: float = 0.1, num_epochs: int = 30, learning_rate: float = 1e-3,
                 weight_decay: float = 0.0, batch_size: int = 1024, patience: int = 3,
                 scenario_loss_weights: Mapping[str, float] | None = None, seed: int = 0,
                 checkpoint_dir: str | Path | None = None, show_progress: bool = True,
                 distributed: bool = False) -> None:
        self.dim = dim
        self.use_text = use_text
        self.use_id = use_id
        self.adaptation = adaptation
        self.loss = loss
        self.temperature = temperature
        self.num_epochs = num_epochs
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.patience = patience
        self.scenario_loss_weights = scenario_loss_weights
        self.seed = seed
        self.checkpoint_dir = checkpoint_dir
        self.show_progress = show_progress
        self.distributed = distributed

    @property
    def needs_item_vectors(self) -> bool:
        """Whether fit needs item vectors: yes when text is used."""
        return bool(self.use_text)

    def fit(self, train: pd.DataFrame, item_vectors: pd.DataFrame | None = None, *,
            items: Sequence[int] | None = None, valid: pd.DataFrame | None = None) -> JointModel:
        """Learn from the training interactions of all scenarios together (vectors set the candidates)."""
        self._check_params()
        item_vectors, items = text_switch(self, item_vectors, items)
        return super().fit(train, item_vectors, items=items, valid=valid)

    def _check_params(self) -> None:
        owner = type(self).__name__
        for name in ("dim", "batch_size"):
            check_positive_int(owner, name, getattr(self, name))
        check_number(owner, "temperature", self.temperature, positive=True)
        for name in ("use_text", "use_id", "distributed"):
            check_flag(owner, name, getattr(self, name))
        if not (self.use_text or self.use_id):
            raise DataError(f"{owner}(use_text=False, use_id=False) has nothing to represent users and items with; "
                            f"switch on at least one of them")
        check_choice(owner, "adaptation", self.adaptation, ADAPTATIONS)
        check_choice(owner, "loss", self.loss, LOSSES)

    def _loss_weights(self) -> torch.Tensor:
        """Each scenario's weight in the loss, 1 unless given. shape: (n_scenarios,)."""
        given = {} if self.scenario_loss_weights is None else self.scenario_loss_weights
        if not isinstance(given, Mapping):
            raise DataError(f"scenario_loss_weights must be None or a mapping scenario -> weight, got {given!r}")
        unknown = sorted(map(str, set(given) - set(self.scenarios_)))
        if unknown:
            raise DataError(f"scenario_loss_weights names scenario(s) {unknown} that are not in the training "
                            f"data; known: {self.scenarios_}")
        weights = [given.get(name, 1.0) for name in self.scenarios_]
        for name, weight in zip(self.scenarios_, weights):
            check_number(type(self).__name__, f"scenario_loss_weights[{name!r}]", weight, positive=False)
        if not any(weights):
            raise DataError("scenario_loss_weights are all zero, so nothing would be learned; give one scenario "
                            "a positive weight")
        return torch.tensor(weights, dtype=torch.float32)

    def _fit(self, users: np.ndarray, items: np.ndarray, scenarios: np.ndarray, train: pd.DataFrame,
             item_vectors: np.ndarray | None) -> None:
        weights = self._loss_weights()  # (S,)
        counts = self.popularity_.sum(axis=0)  # (n_items,)
        history_text = None
        if item_vectors is not None:
            history_text = history_means(self.seen_, item_vectors)  # (n_users, d_text)
        seeded_generator(self.seed)
        net = _JointNet(len(self.user_ids_), len(self.scenarios_), self.dim, self.adaptation, self.use_id,
                        item_vectors, history_text, counts > 0)
        self.module_ = net
        log_q = torch.as_tensor(np.log(np.maximum(counts, 1.0) / counts.sum()), dtype=torch.float32)  # (n_items,)
        keys = seen_keys(users, items, len(self.item_ids_))
        temperature, workers = float(self.temperature), worker_group(self.distributed)

        def batches(rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, ...]]:
            order = rng.permutation(len(users))
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                batch = (torch.as_tensor(users[rows]), torch.as_tensor(items[rows]), torch.as_tensor(scenarios[rows]))
                if self.loss == "bpr":
                    batch += (torch.as_tensor(uniform_negatives(rng, users[rows], len(self.item_ids_), keys)),)
                yield batch

        def loss(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
            user, item, scenario = batch[:3]  # (B,) each: the whole batch
            mine = workers.rows(len(user))  # this process's b rows of it: all B on one process
            h = F.normalize(net.users(user[mine], scenario[mine]), dim=-1)  # (b, dim)
            if self.loss == "bpr":
                v = F.normalize(net.items(item[mine]), dim=-1)  # (b, dim)
                negative = F.normalize(net.items(batch[3][mine]), dim=-1)  # (b, dim)
                per_row = -F.logsigmoid((h * (v - negative)).sum(dim=1) / temperature)  # (b,)
            else:
                per_row = in_batch_softmax(h, item, mine, lambda i: F.normalize(net.items(i), dim=-1), log_q,
                                           temperature)  # (b,)
            return workers.mean(weights[scenario[mine]] * per_row, len(user))

        validate = validation_ndcg(self, train, self._validation, seed=self.seed)
        self.history_ = train_module(
            net, batches, loss, validate=validate, num_epochs=self.num_epochs, learning_rate=self.learning_rate,
            weight_decay=self.weight_decay, patience=self.patience, seed=self.seed, checkpoint_dir=self.checkpoint_dir,
            run_key=run_key(self, users, items, scenarios, item_vectors), show_progress=self.show_progress,
            description="joint model", workers=workers)

    def _score(self, user_index: np.ndarray, scenario_index: int) -> np.ndarray:
        """cos(h, v_i) / temperature for every item in one scenario. shape: (n_users, n_items)."""
        items = torch.from_numpy(self.item_vectors())  # (n_items, dim)

        def users(user: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(self.user_vectors(user.numpy(), scenario_index))  # (B, dim)

        return scores_in_chunks(users, items, user_index)

    def item_vectors(self) -> np.ndarray:
        """The item side of the score, ``v_i / |v_i| / temperature`` (score = user . item). shape: (n_items, dim)."""
        self._check_fitted()
        with torch.inference_mode():
            return (F.normalize(self.module_.items(), dim=-1) * (1.0 / float(self.temperature))).numpy()

    def user_vectors(self, user_index: np.ndarray, scenario_index: int) -> np.ndarray:
        """The user side of the score in one scenario, ``h / |h|``, for user indices. shape: (len(user_index), dim)."""
        self._check_fitted()
        user = torch.as_tensor(np.asarray(user_index, dtype=np.int64))
        with torch.inference_mode():
            return F.normalize(self.module_.users(user, torch.full_like(user, scenario_index)), dim=-1).numpy()

    def scenario_parameters(self) -> dict[str, dict[str, np.ndarray]]:
        """The learned parameters of each scenario: its embedding c_s and its adaptation of the shared tower."""
        self._check_fitted()
        net = self.module_
        if net.scenario is None:
            raise DataError("this JointModel has adaptation=None, so it has no scenario parameters")
        names = ("gamma", "beta") if self.adaptation == "film" else ("scenario_weight", "scenario_bias")
        return {scenario: {"embedding": net.scenario.weight[s].detach().numpy().copy()}
                | {name: getattr(net.tower, name)[s].detach().numpy().copy() for name in names}
                for s, scenario in enumerate(self.scenarios_)}
