"""The sequential model: next-item prediction from each user's chronological history across all scenarios
(SASRec; with text, UniSRec's adaptor), adapted to the scenario of the next interaction.

    item i:           v_i = m_i e_i + u_i                          m_i = 1 if i is in training, else 0
    text adaptor:     w_i = (x_i - mean_j x_j) U Lambda^(-1/2)     PCA whitening of the frozen text x_i, k parts
                      u_i = sum_e g_e(w_i) (w_i A_e + b_e)          g = softmax(w_i G + c): 4 experts and a gate
    position t:       z_t = v_{i_t} + p_{L-t} + c_{s_t}             s_t: the scenario of the t-th interaction
    user u:           h   = Transformer_causal(z_1..z_n)[n]          the output at the latest interaction
                      h_s = gamma_s * h + beta_s                      FiLM to the scenario s of the next one
    score_s(u, i) = h_s . v_i

The article's item tower is f(x) = Embed(x) W + b with score cos(f(x_u), f(x_i)). The adaptor generalises it:
one expert (E = 1, g = 1) and no whitening give u_i = x_i A + b = f(x_i); whitening re-expresses x_i in
decorrelated unit-variance coordinates before that map, keeping its k = text_components leading principal
components (None: k = dim; "all": every one; never more than the text's width); several experts let different
regions of the text space use different maps. The user side is no longer a mean of f over the history but an
order-aware encoder of the v's, and the cosine becomes the plain dot product (cosine is the case of unit-length
h_s and v_i).

Parts: use_id (e_i), use_text (u_i; needs item_vectors), adaptation="film" (c_s and gamma_s, beta_s; None gives
plain SASRec, the same scores in every scenario). Items never seen in training have no id part (m_i = 0): with
text they are scored from u_i alone, so cold items can be recommended; without text their vector is zero and so
is their score.

Cold items and ID dropout: a warm item's e_i can fit its training interactions on its own, and u_i then learns
little, so a cold item (text only) would be scored by a text part that was never made to carry the item. With
probability `id_dropout` an occurrence of an item (an input position, or a whole item of the softmax table for
one batch) loses its id part during training, so the text part alone must predict and be predicted: the
training sees exactly the situation of a cold item. Dropout is used rather than a frequency gate because it
adds no parameters and needs no choice of how to scale by frequency; it applies only with both text and ids.
`text_loss_weight` w > 0 adds a second term to the loss, the same targets ranked by the text parts alone over
the same softmax, CE(h . v) + w CE(h . u): every transition then trains u_i to carry the item, not only those
whose id was dropped (also only with both text and ids).
bench/cold_gate.py measures these on validation: a gate on a fitted model's id part (dropped or shrunk for rare
items) moves cold items' NDCG@10 by amounts whose intervals include zero; the text part alone scores 72% of the
whole model on ml-100k and 4% on food-kitchen with k = dim = 64, 95% and 51% with all 384 components of
MiniLM's vectors, 99% and 74% with text_loss_weight 1 on top (the loss term alone changes little). These are
single fits, which choose nothing; `xscene tune` searches both (experiments/tuning.py, seq-joint's space).

Training: for every training interaction but each user's first, predict the item from the interactions before
it, at every position at once (causal attention), with cross-entropy over the items seen in training (items
never seen cannot be a target, and keeping them out of the softmax keeps their text vectors from being pushed
down); loss="sampled" draws SAMPLED_NEGATIVES items per batch from the items' training frequencies q and
subtracts log q from every logit (logQ correction), for large catalogues. loss="auto" (the default) takes the full
softmax up to FULL_SOFTMAX_MAX_ITEMS training items and the sampled one above: the full softmax costs three
(positions x dim x items) products a batch, and on food-kitchen's 36,000 items an epoch of it took 8 minutes on
one thread. A history longer than max_length is
cut into windows of max_length transitions, counted from its end (the oldest window left-padded; a window sees
no context from before its start). Each epoch trains on one window per user, drawn at random, so an epoch costs
at most n_users * max_length positions whatever the lengths of the histories, and over the epochs every
transition is trained on; the (n_windows, max_length) index arrays are built once, before training.

Early stopping waits for PATIENCE_STEPS optimiser steps without a better validation NDCG@10, and at least
MIN_PATIENCE epochs (patience=None; an int sets the epochs): an epoch is one window per user, so its length in
steps grows with the number of users (ml-100k 8, ml-1m 48, food-kitchen 400), and validation NDCG@10 over one
held-out item per user is noisy. On ml-100k that is 40 epochs: with 10, seeds 1 and 2 of `seq-joint` stopped at
epochs 32 and 44, and with 40 seed 1 went on to a best validation epoch of 153. ema_decay=d validates and keeps a
moving average of the weights instead (training/loop.py); bench/weight_average.py measures on validation whether
that steadies the seeds (chapter 8 reports it), and None, the default, keeps the best epoch's own weights.

History when scoring: while fitting (early stopping on validation NDCG@10), each user's training rows; after
fit, the training rows plus the `valid` rows given to fit, so the test item is predicted from everything before
it (the protocol). Rows are ordered by timestamp (when both frames have one), ties by row order, training rows
before validation rows; only the last max_length are read. Validation rows of unknown users, items outside the
candidates or scenarios not in training are left out of the history. `set_history(rows)` replaces the
history with other rows (new interactions at serving time, or the training rows alone to score validation rows).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from xscene_lib.data.validation import DataError, check_choice, check_flag, check_int, check_number, check_positive_int
from xscene_lib.models.fitting import SCORE_CHUNK, run_key, scores_in_chunks, text_switch, validation_ndcg
from xscene_lib.models.histories import chronological, recent, timestamps_of, windows
from xscene_lib.models.sequence_net import PAD, FullSoftmaxLoss, SequenceNet, whitened
from xscene_lib.models.two_tower import TwoTowerRecommender
from xscene_lib.training.loop import seeded_generator, train_module

ADAPTATIONS = ("film", None)
LOSSES = ("auto", "softmax", "sampled")
FULL_SOFTMAX_MAX_ITEMS = 10_000  # loss="auto": the full softmax up to this many training items, sampled above
SAMPLED_NEGATIVES = 512  # items drawn per batch for loss="sampled" (all training items when there are fewer)
PATIENCE_STEPS = 320  # early stopping's default wait, in optimiser steps (40 epochs on ml-100k) ...
MIN_PATIENCE = 10  # ... and in epochs, at least
ENCODE_ROWS = 32  # training windows encoded at once: a batch's, sorted by length, in groups cut to their longest


class SequentialModel(TwoTowerRecommender):
    """SASRec over all scenarios' interactions in time order, adapted to the next scenario; optional text (UniSRec).

    A user is scored from their history: the training rows while fitting, the training plus `valid` rows after.
    """

    def __init__(self, dim: int = 64, num_layers: int = 2, num_heads: int = 2, max_length: int = 50,
                 dropout: float = 0.2, use_text: bool = False, use_id: bool = True, adaptation: str | None = "film",
                 id_dropout: float = 0.2, text_loss_weight: float = 0.0, text_components: int | str | None = None,
                 loss: str = "auto", num_epochs: int = 400, learning_rate: float = 1e-3,
                 weight_decay: float = 0.0, ema_decay: float | None = None, batch_size: int = 128,
                 patience: int | None = None, seed: int = 0, checkpoint_dir: str | Path | None = None,
                 show_progress: bool = True) -> None:
        self.dim = dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.max_length = max_length
        self.dropout = dropout
        self.use_text = use_text
        self.use_id = use_id
        self.adaptation = adaptation
        self.id_dropout = id_dropout
        self.text_loss_weight = text_loss_weight
        self.text_components = text_components
        self.loss = loss
        self.num_epochs = num_epochs
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.ema_decay = ema_decay
        self.batch_size = batch_size
        self.patience = patience
        self.seed = seed
        self.checkpoint_dir = checkpoint_dir
        self.show_progress = show_progress

    @property
    def needs_item_vectors(self) -> bool:
        """Whether fit needs item vectors: yes when text is used."""
        return bool(self.use_text)

    def fit(self, train: pd.DataFrame, item_vectors: pd.DataFrame | None = None, *,
            items: Sequence[int] | None = None, valid: pd.DataFrame | None = None) -> SequentialModel:
        """Learn next-item prediction from the training interactions (with a `timestamp` column to order them)."""
        self._check_params()
        item_vectors, items = text_switch(self, item_vectors, items)
        return super().fit(train, item_vectors, items=items, valid=valid)

    def _check_params(self) -> None:
        owner = type(self).__name__
        for name in ("dim", "num_layers", "num_heads", "max_length", "num_epochs", "batch_size"):
            check_positive_int(owner, name, getattr(self, name))
        if self.patience is not None:
            check_positive_int(owner, "patience", self.patience)
        if self.text_components not in (None, "all"):
            check_positive_int(owner, "text_components", self.text_components, hint='or "all" or None (dim)')
        if self.dim % self.num_heads:
            raise DataError(f"{owner}(dim={self.dim}, num_heads={self.num_heads}): dim must be a multiple of "
                            f"num_heads; change one of them")
        for name in ("dropout", "id_dropout"):
            check_number(owner, name, getattr(self, name), minimum=0, below=1)
        check_number(owner, "learning_rate", self.learning_rate, positive=True)
        check_number(owner, "text_loss_weight", self.text_loss_weight, positive=False)
        check_number(owner, "weight_decay", self.weight_decay, positive=False)
        if self.ema_decay is not None:
            check_number(owner, "ema_decay", self.ema_decay, minimum=0, below=1, hint="e.g. 0.99, or None")
        check_int(owner, "seed", self.seed, minimum=0)
        for name in ("use_text", "use_id", "show_progress"):
            check_flag(owner, name, getattr(self, name))
        if not (self.use_text or self.use_id):
            raise DataError(f"{owner}(use_text=False, use_id=False) has nothing to represent items with; "
                            f"switch on at least one of them")
        check_choice(owner, "adaptation", self.adaptation, ADAPTATIONS)
        check_choice(owner, "loss", self.loss, LOSSES)

    def _fit(self, users: np.ndarray, items: np.ndarray, scenarios: np.ndarray, train: pd.DataFrame,
             item_vectors: np.ndarray | None) -> None:
        length = self.max_length
        order = chronological(users, timestamps_of(train))
        *arrays, owner = windows(users[order], items[order], scenarios[order], length)
        inputs, input_scenarios, targets, target_scenarios = map(torch.as_tensor, arrays)  # (R, L); targets -1: none
        lengths = (inputs != PAD).sum(dim=1)  # (R,): the items in each window
        first = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])  # (n,): each user's first window
        n_windows = np.diff(np.r_[first, len(owner)])  # (n,): and their number
        self.recent_items_, self.recent_scenarios_ = recent(users[order], items[order], scenarios[order],
                                                            len(self.user_ids_), length)  # (n_users, L) each
        counts = self.popularity_.sum(axis=0)  # (n_items,) training interactions
        known = counts > 0
        known_index = torch.as_tensor(np.flatnonzero(known))  # (n_known,): the items the softmax ranks
        softmax_column = torch.as_tensor(np.cumsum(known) - 1)  # (n_items,): an item's column among them
        seeded_generator(self.seed)  # the initial weights
        text = None
        if item_vectors is not None:  # k leading whitened components, never more than the text's width
            k = item_vectors.shape[1] if self.text_components == "all" else self.text_components or self.dim
            text = whitened(item_vectors, k)
        net = SequenceNet(len(self.item_ids_), len(self.scenarios_), self.dim, self.num_layers, self.num_heads,
                          length, float(self.dropout), self.adaptation, self.use_id, text, known)
        self.module_ = net
        drop_ids = float(self.id_dropout) if (self.use_id and self.use_text) else 0.0
        text_weight = float(self.text_loss_weight) if (self.use_id and self.use_text) else 0.0
        frequency = counts / counts.sum()  # (n_items,) q_i, 0 for items never in training
        log_q = torch.as_tensor(np.log(np.where(known, frequency, 1.0)), dtype=torch.float32)  # (n_items,), 0: unused
        n_sampled = min(SAMPLED_NEGATIVES, int(known.sum()))
        self.loss_ = self.loss if self.loss != "auto" else \
            "sampled" if known.sum() > FULL_SOFTMAX_MAX_ITEMS else "softmax"

        def batches(rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, ...]]:
            order = rng.permutation(first + (rng.random(len(first)) * n_windows).astype(np.int64))  # a window a user
            for start in range(0, len(order), self.batch_size):
                rows = torch.as_tensor(order[start:start + self.batch_size])
                if self.loss_ == "sampled":
                    yield rows, torch.as_tensor(rng.choice(len(frequency), size=n_sampled, p=frequency))
                else:
                    yield (rows,)

        def loss(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
            rows = batch[0][torch.argsort(lengths[batch[0]], stable=True)]  # (B,), shortest windows first
            keep = id_keep = None
            if drop_ids > 0:
                keep = (torch.rand(len(rows), length) >= drop_ids).float()  # (B, L): per occurrence
                id_keep = (torch.rand(len(known), 1) >= drop_ids).float()  # (n_items, 1): per item, this batch
            hidden, wanted = [], []  # the positions with a target, group by group: the loss is their mean
            for start in range(0, len(rows), ENCODE_ROWS):  # a group's leading all-padding columns are skipped
                group = rows[start:start + ENCODE_ROWS]
                output = net.encode(inputs[group], input_scenarios[group],
                                    None if keep is None else keep[start:start + ENCODE_ROWS])  # (b, L', dim)
                target = targets[group][:, -output.shape[1]:]  # (b, L')
                present = target >= 0
                hidden.append(net.adapt(output[present], target_scenarios[group][:, -output.shape[1]:][present]))
                wanted.append(target[present])
            hidden, wanted = torch.cat(hidden), torch.cat(wanted)  # (N, dim), (N,)

            def table(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
                """v_i and u_i (None without text) of these items, this batch, from one pass through the adaptor.
                shape: (len(index), dim) each."""
                ids, text = net.parts(index)
                return net.whole(ids, text, None if id_keep is None else id_keep[index]), text

            if self.loss_ == "sampled":
                sampled = batch[1]  # (K,)
                positives, negatives = table(wanted), table(sampled)

                def cross_entropy(part: int) -> torch.Tensor:  # part 0: over v_i, 1: over u_i alone
                    positive = (hidden * positives[part]).sum(dim=1, keepdim=True) - log_q[wanted, None]  # (N, 1)
                    negative = hidden @ negatives[part].T - log_q[sampled][None]  # (N, K)
                    negative = negative.masked_fill(sampled[None] == wanted[:, None], -torch.inf)  # accidental hits
                    logits = torch.cat([positive, negative], dim=1)  # (N, 1 + K), the positive first
                    return F.cross_entropy(logits, torch.zeros_like(wanted))
            else:
                known_rows = table(known_index)  # over the n_known items

                def cross_entropy(part: int) -> torch.Tensor:  # part 0: over v_i, 1: over u_i alone
                    return FullSoftmaxLoss.apply(hidden, known_rows[part], softmax_column[wanted])

            if text_weight == 0:
                return cross_entropy(0)
            return cross_entropy(0) + text_weight * cross_entropy(1)

        validate = validation_ndcg(self, train, self._validation, seed=self.seed)
        steps = -(-len(first) // self.batch_size)  # optimiser steps an epoch
        self.patience_ = self.patience or max(MIN_PATIENCE, -(-PATIENCE_STEPS // max(steps, 1)))  # epochs
        self.history_ = train_module(
            net, batches, loss, validate=validate, num_epochs=self.num_epochs, learning_rate=self.learning_rate,
            weight_decay=self.weight_decay, patience=self.patience_, seed=self.seed, checkpoint_dir=self.checkpoint_dir,
            run_key=run_key(self, inputs.numpy(), input_scenarios.numpy(), targets.numpy(), target_scenarios.numpy(),
                            item_vectors),
            show_progress=self.show_progress, description="sequential model", ema_decay=self.ema_decay)
        if self._validation is not None:  # training rows first on equal times
            self.set_history(pd.concat([train, self._validation], ignore_index=True))

    def set_history(self, rows: pd.DataFrame) -> SequentialModel:
        """Score users from these interactions from now on (e.g. new ones at serving time, or the training rows
        alone to score validation rows); no weights change.

        Rows of unknown users, items or scenarios are left out; a user with no usable row is scored from an empty
        history. Rows are ordered by timestamp when every row has one, ties (and no timestamps) by row order.
        """
        self._check_fitted()
        missing = [name for name in ("user_id", "item_id", "scenario") if name not in rows.columns]
        if missing:
            raise DataError(f"set_history: rows lack column(s) {missing}; give user_id, item_id, scenario "
                            f"(and timestamp to order them)")
        indices = (pd.Index(self.user_ids_).get_indexer(rows["user_id"]),
                   pd.Index(self.item_ids_).get_indexer(rows["item_id"]),
                   pd.Index(self.scenarios_).get_indexer(rows["scenario"].astype("str")))
        usable = (indices[0] >= 0) & (indices[1] >= 0) & (indices[2] >= 0)
        timed = "timestamp" in rows.columns and not rows["timestamp"].isna().any()
        stamps = timestamps_of(rows) if timed else None
        users, items, scenarios = (part[usable] for part in indices)
        order = chronological(users, None if stamps is None else stamps[usable])
        self.recent_items_, self.recent_scenarios_ = recent(users[order], items[order], scenarios[order],
                                                            len(self.user_ids_), self.max_length)
        return self

    def _score(self, user_index: np.ndarray, scenario_index: int) -> np.ndarray:
        """h_s . v_i for every item in one scenario. shape: (n_users, n_items)."""
        items = torch.from_numpy(self.item_vectors())  # (n_items, dim)

        def users(user: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(self.user_vectors(user.numpy(), scenario_index))  # (B, dim)

        return scores_in_chunks(users, items, user_index)

    def item_vectors(self) -> np.ndarray:
        """The item side of the score, v_i (the softmax's item table). shape: (n_items, dim)."""
        self._check_fitted()
        with torch.inference_mode():
            return self.module_.items().numpy()

    def user_vectors(self, user_index: np.ndarray, scenario_index: int) -> np.ndarray:
        """h_s: the encoder's output at each user's latest interaction, adapted to the scenario.

        shape: (len(user_index), dim).
        """
        self._check_fitted()
        user_index = np.asarray(user_index, dtype=np.int64).reshape(-1)
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(user_index), SCORE_CHUNK):
                user = torch.as_tensor(user_index[start:start + SCORE_CHUNK])
                sequence = torch.as_tensor(self.recent_items_)[user]  # (B, L)
                output = self.module_.encode(sequence, torch.as_tensor(self.recent_scenarios_)[user])[:, -1]
                chunks.append(self.module_.adapt(output, torch.full_like(user, scenario_index)).numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)
