"""Recommendations from a saved checkpoint: the top-K items for users the dataset knows, or for raw item
histories of users it never saw (the serving case).

Every model goes through the evaluator's own ranking path (trainer.GenRecTrainer.evaluate): generative models
through `generate_topk`, classic RecBole models through `full_sort_predict`. Nothing is trained and no cache is
written: the checkpoint is read through the allow-listed unpickler (safety.load_checkpoint), the semantic IDs
and text embeddings from the training run's caches.

Items a user already has are excluded unless `exclude_seen=False`. A score table excludes them directly; a
generative model's decoder cannot skip given items: the seen items are dropped from its output, and a user left with
fewer than K is decoded again with a beam twice as wide (up to the catalogue). Wider beams cost time: the README
gives latencies with and without exclusion. (LIGER's hybrid inference re-ranks only its first `liger_candidates`
beams, so a user with many seen items may get fewer than K there.)
"""
import csv
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from recbole.data.interaction import Interaction
from recbole.utils import ModelType

from recbole_genrec.data.atomic import read_atomic

# Fields of a dataset's `.item` file shown as the item's title, the first one present.
TITLE_FIELDS = ("title", "movie_title", "name", "item_name")


@dataclass
class Recommendation:
    """One user's top-K list, best first. `user`: the user's token, or `history N` for the N-th raw history."""

    user: str
    items: list
    scores: list
    titles: list = field(default=None)

    def rows(self):
        titles = self.titles or [None] * len(self.items)
        return [{"user": self.user, "rank": rank, "item": item, "score": score, "title": title}
                for rank, (item, score, title) in enumerate(zip(self.items, self.scores, titles), 1)]


def recommend(checkpoint, users=None, histories=None, k=10, exclude_seen=True, device="cpu", batch_size=256,
              config_dict=None):
    """Top-`k` items for `users` (tokens of the dataset's users; default: every user) and/or `histories` (lists of
    raw item tokens, oldest first, of users the dataset never saw). Returns one Recommendation per user, in the
    order asked (users first, then histories). Unknown user or item tokens are refused with a ValueError naming
    them, before any ranking. One call loads the checkpoint; a server keeps a `Recommender`. `config_dict`: where
    the caches are and what is logged (`cache_dir`, `state`), quick_start.load_data's."""
    return Recommender(checkpoint, device, config_dict).recommend(users, histories, k, exclude_seen, batch_size)


class Recommender:
    """A checkpoint loaded once (config, dataset, splits, item titles) for many `recommend` calls. The model is
    built per decoding width (a wider beam for users whose seen items fill the first one: see the module's
    docstring); widths are powers of two, so a few models serve every request."""

    def __init__(self, checkpoint, device="cpu", config_dict=None):
        from recbole_genrec import registry
        from recbole_genrec.quick_start import load_data

        self.checkpoint, self.config, self.dataset, self.train_data, _, _ = load_data(checkpoint, device, config_dict)
        self.sequential = self.config["MODEL_TYPE"] == ModelType.SEQUENTIAL
        self.n_items = self.dataset.item_num - 1  # item 0 is RecBole's padding
        self.generative = hasattr(registry.get_model(self.config["model"]), "generate_topk")
        self.beam_key = _beam_width_key(self.config)
        self.trained_width = int(self.config[self.beam_key]) if self.beam_key else None
        self.item_tokens = self.dataset.field2id_token[self.dataset.iid_field]
        self.titles = _item_titles(self.config, self.item_tokens)
        self._models = {}

    def model(self, width):
        """The checkpoint's model decoding `width` candidates (the beam is an inference setting: no weight depends
        on it); models without a beam are built once."""
        from recbole_genrec.quick_start import load_model

        key = width if self.beam_key else None
        if key not in self._models:
            if self.beam_key:
                self.config[self.beam_key] = width
            self._models[key] = load_model(self.checkpoint, self.config, self.train_data).eval()
        return self._models[key]

    def recommend(self, users=None, histories=None, k=10, exclude_seen=True, batch_size=256):
        """See `recommend`."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}.")
        requests = _requests(self.dataset, users, histories, self.sequential, self.config["model"])
        most_seen = max((len(set(seen)) for _, _, seen in requests), default=0) if exclude_seen else 0
        if k > self.n_items - most_seen:
            raise ValueError(f"k={k} asks for more items than {self.config['dataset']} can give: {self.n_items} items, "
                             f"of which a requested user already has {most_seen}. Lower k (or exclude_seen=False).")
        results = []
        for start in range(0, len(requests), batch_size):
            chunk = requests[start:start + batch_size]
            for (label, _, _), (row_items, row_scores) in zip(chunk, self._rank_unseen(chunk, k, exclude_seen)):
                results.append(Recommendation(
                    user=label, items=[str(self.item_tokens[i]) for i in row_items],
                    scores=[float(s) for s in row_scores],
                    titles=[self.titles[i] for i in row_items] if self.titles is not None else None))
        return results

    def _rank_unseen(self, chunk, k, exclude_seen):
        """[(item ids, scores)] per request, best first. A score table masks the seen items; a generator decodes
        `width` candidates (at least K, the trained beam), and the rows left with fewer than K unseen ones are
        decoded again at twice the width, up to the catalogue: most users need no second pass."""
        width, pending, ranked = self._width(k), list(range(len(chunk))), [None] * len(chunk)
        while pending:
            rows = [chunk[i] for i in pending]
            items, scores = _rank(self.model(width), self.dataset, self.config, rows, k, width, exclude_seen,
                                  self.sequential)
            again = []
            for i, row_items, row_scores in zip(pending, items, scores):
                keep = row_items > 0
                if self.generative and keep.sum() < k and width < self.n_items:
                    again.append(i)
                else:
                    ranked[i] = (row_items[keep][:k], row_scores[keep][:k])
            pending, width = again, self._width(2 * width)
        return ranked

    def _width(self, candidates):
        """The decoding width for `candidates`: the catalogue at most; for a beam, at least the trained one and a
        power of two (so a few models serve every request)."""
        if not self.beam_key:
            return min(self.n_items, candidates)
        return max(self.trained_width, min(self.n_items, 1 << (candidates - 1).bit_length()))


def _beam_width_key(config):
    from recbole_genrec import registry

    if not registry.is_genrec_model(config["model"]):
        return None
    return registry.get_model(config["model"]).beam_width_key(config)


def _requests(dataset, users, histories, sequential, model_name):
    """[(label, user id or 0, item ids oldest first)] for the requested users and raw histories."""
    if users is None and histories is None:
        users = list(dataset.field2id_token[dataset.uid_field][1:])
    requests = []
    if users is not None:
        tokens = [str(user) for user in users]
        known = dataset.field2token_id[dataset.uid_field]
        unknown = [token for token in tokens if token not in known]
        if unknown:
            raise ValueError(f"Unknown user{'s' if len(unknown) > 1 else ''} {', '.join(unknown[:10])} (not in "
                             f"{dataset.dataset_name}'s interactions after filtering): pass their item histories "
                             f"instead (histories=... / --histories=...).")
        sequences = _user_sequences(dataset, [known[token] for token in tokens])
        requests += [(token, known[token], sequences[known[token]]) for token in tokens]
    if histories is not None:
        if not sequential:
            raise ValueError(f"{model_name} scores users by their id, so it cannot rank for a raw history of a user it "
                             f"never saw: use a sequential model (SASRec, TIGER, ...) for histories.")
        known = dataset.field2token_id[dataset.iid_field]
        for number, history in enumerate(histories, 1):
            tokens = [str(item) for item in history]
            unknown = [token for token in tokens if token not in known]
            if unknown or not tokens:
                what = f"unknown item{'s' if len(unknown) > 1 else ''} {', '.join(unknown[:10])}" if unknown else "no items"
                raise ValueError(f"History {number} has {what}: a history holds item tokens of "
                                 f"{dataset.dataset_name}'s .inter file, oldest first.")
            requests.append((f"history {number}", 0, [known[token] for token in tokens]))
    return requests


def _user_sequences(dataset, user_ids):
    """{user id: every item id the user interacted with, in time order}. A sequential dataset keeps, after its
    augmentation, one row per target with the history before it: the first row's history plus every target."""
    feat, wanted = dataset.inter_feat, set(user_ids)
    seq_field = dataset.iid_field + dataset.config["LIST_SUFFIX"]
    has_lists = seq_field in feat.interaction
    uids, iids = feat[dataset.uid_field].numpy(), feat[dataset.iid_field].numpy()
    sequences = {}
    for row in np.flatnonzero(np.isin(uids, list(wanted))):
        user = int(uids[row])
        if user not in sequences:
            first = feat[seq_field][row][:int(feat[dataset.config["ITEM_LIST_LENGTH_FIELD"]][row])] if has_lists else []
            sequences[user] = [int(i) for i in first]
        sequences[user].append(int(iids[row]))
    return sequences


@torch.no_grad()
def _rank(model, dataset, config, chunk, k, width, exclude_seen, sequential):
    """(items long [B, >=k] with 0 where none, scores float [B, >=k]) for one chunk of requests, best first."""
    device = config["device"]
    user_ids = torch.tensor([user for _, user, _ in chunk], dtype=torch.long)
    fields = {dataset.uid_field: user_ids}
    if sequential:
        length = dataset.field2seqlen[dataset.iid_field + config["LIST_SUFFIX"]]
        item_seq = torch.zeros(len(chunk), length, dtype=torch.long)
        lengths = torch.zeros(len(chunk), dtype=torch.long)
        for row, (_, _, seen) in enumerate(chunk):
            recent = seen[-length:]  # the model reads the last MAX_ITEM_LIST_LENGTH items, as in training
            item_seq[row, :len(recent)] = torch.tensor(recent)
            lengths[row] = len(recent)
        fields[model.ITEM_SEQ] = item_seq
        fields[model.ITEM_SEQ_LEN] = lengths
    interaction = Interaction(fields).to(device)
    if hasattr(model, "generate_topk"):
        items, scores = model.generate_topk(interaction, width)
        items, scores = items.to(device), scores.to(device).float()
        drop = items < 0
        if exclude_seen:
            drop |= seen_items(chunk, items, dataset.item_num)
        items = items.masked_fill(drop, 0)
        # seen and missing items sink to the end, the rest keep the decoder's order
        order = torch.sort(drop.int(), dim=1, stable=True).indices
        return items.gather(1, order).cpu(), scores.gather(1, order).cpu()
    scores = model.full_sort_predict(interaction).view(len(chunk), -1).float()
    scores[:, 0] = -torch.inf  # padding
    if exclude_seen:  # the score table has a column per item already: a mask of the same shape
        seen = torch.zeros(len(chunk), dataset.item_num, dtype=torch.bool, device=device)
        for row, (_, _, items) in enumerate(chunk):
            seen[row, items] = True
        scores = scores.masked_fill(seen, -torch.inf)
    top_scores, top_items = scores.topk(k, dim=1)
    return top_items.masked_fill(torch.isinf(top_scores), 0).cpu(), top_scores.cpu()


def seen_items(chunk, items, item_num):
    """bool [B, W]: whether items[row, j] (long [B, W], -1 = none) is one of request `row`'s seen items (chunk's
    third field). Looked up among the chunk's sorted (row, item) pairs, not in a [B, item_num] mask: the cost
    grows with the histories and the decoded lists, not with the catalogue."""
    rows = [row for row, (_, _, seen) in enumerate(chunk) for _ in seen]
    pairs = torch.tensor([item for _, _, seen in chunk for item in seen], dtype=torch.long)
    pairs = torch.unique(torch.tensor(rows, dtype=torch.long) * item_num + pairs).to(items.device)
    if not len(pairs):
        return torch.zeros_like(items, dtype=torch.bool)
    wanted = torch.arange(len(items), device=items.device).unsqueeze(1) * item_num + items.clamp(min=0)
    return (pairs[torch.searchsorted(pairs, wanted).clamp(max=len(pairs) - 1)] == wanted) & (items >= 0)


def _item_titles(config, item_tokens):
    """Title per internal item id from the dataset's `.item` file (its first TITLE_FIELDS column), or None."""
    item_file = os.path.join(config["data_path"], f"{config['dataset']}.item")
    if not os.path.isfile(item_file):
        return None
    names, rows = read_atomic(item_file)
    column = next((names.index(name) for name in TITLE_FIELDS if name in names), None)
    if column is None:
        return None
    id_column = names.index(config["ITEM_ID_FIELD"]) if config["ITEM_ID_FIELD"] in names else 0
    by_token = {row[id_column]: row[column].strip() for _, row in rows}
    return [by_token.get(str(token)) for token in item_tokens]


def format_recommendations(recommendations, title_width=60):
    """A readable table: one line per (user, rank) with the item, its score and its title (cut to `title_width`
    characters; the CSV keeps it whole)."""
    from recbole_genrec.results import format_table

    rows = [row for recommendation in recommendations for row in recommendation.rows()]
    has_titles = any(row["title"] for row in rows)
    for row in rows:
        row["score"] = f"{row['score']:.4f}"
        title = row.pop("title")
        if has_titles:
            row["title"] = title if title is None or len(title) <= title_width else title[:title_width - 3] + "..."
    return format_table(rows)


def write_recommendations(recommendations, path):
    """CSV with one row per (user, rank): user, rank, item, score, title."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["user", "rank", "item", "score", "title"])
        writer.writeheader()
        for recommendation in recommendations:
            writer.writerows(recommendation.rows())
