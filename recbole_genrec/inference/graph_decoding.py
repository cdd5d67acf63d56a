"""Graph-constrained decoding (RPG, Hou et al., KDD 2025): rank items by walking an item-item k-NN graph instead
of scoring the whole catalogue.

1. `build_item_graph`: item-item similarity = mean over digits of the cosine of the items' digit code embeddings;
   every item keeps its `num_edges` most similar other items. Built in chunks of items with table gathers and
   torch.topk (no Python loop over items), on whatever device the embeddings live on; a chunk holds at most
   GRAPH_BLOCK_ELEMENTS similarities, so the build's memory is the graph's N x E plus a fixed block (the official
   code allocates a dense N x N matrix: 16 GB at 64k items).
2. `graph_topk`: start from `num_beams` items per user, then `propagation_steps` times: candidates = current beams
   + their neighbours (deduplicated), score only the candidates with the model's exact per-item score, keep the
   best `num_beams`. The current beams stay candidates, so the best score never decreases. Returns the top-k of the
   last candidate set, -1 padded."""
import torch
import torch.nn.functional as F

from recbole_genrec.inference.rerank import mask_duplicates

# Similarities held at once while building the graph (float32: 64 MB; the gather and topk add about twice that).
GRAPH_BLOCK_ELEMENTS = 1 << 24


def code_similarity_tables(code_embeddings: torch.Tensor) -> torch.Tensor:
    """code_embeddings [m, K, D] -> [m, K, K] cosine similarity of every pair of codes of the same digit."""
    unit = F.normalize(code_embeddings.float(), dim=-1)
    return unit @ unit.transpose(1, 2)


@torch.no_grad()
def build_item_graph(code_embeddings: torch.Tensor, item_codes: torch.Tensor, num_edges: int, chunk_size: int = 2048):
    """k-NN graph over items 1..N: long [N + 1, E] with E = min(num_edges, N - 1) neighbours of each item, most
    similar first; never the item itself nor the padding item 0 (row 0 is all zeros and is never used).

    sim(i, j) = mean_d cos(e_d[c_id], e_d[c_jd]) is read from per-digit K x K cosine tables, so a chunk of C items
    costs m gathers of [C, N], independent of the embedding width. C = chunk_size, lowered where needed so that
    C x N stays within GRAPH_BLOCK_ELEMENTS (at least one item per chunk)."""
    n_items = item_codes.shape[0] - 1
    edges = min(int(num_edges), n_items - 1)
    if edges < 1:
        raise ValueError(f"graph decoding needs at least 2 items and num_edges >= 1 (got {n_items} items, {num_edges})")
    tables = code_similarity_tables(code_embeddings)  # [m, K, K]
    m = tables.shape[0]
    neighbours = torch.zeros(n_items + 1, edges, dtype=torch.long, device=item_codes.device)
    chunk_size = graph_chunk_rows(n_items, chunk_size)
    for start in range(1, n_items + 1, chunk_size):
        rows = torch.arange(start, min(start + chunk_size, n_items + 1), device=item_codes.device)
        similarity = torch.zeros(len(rows), n_items + 1, device=tables.device)
        for digit in range(m):  # a loop over digits (m <= 64), never over items
            similarity += tables[digit][item_codes[rows, digit]][:, item_codes[:, digit]]
        similarity /= m
        similarity[:, 0] = -float("inf")
        similarity[torch.arange(len(rows), device=rows.device), rows] = -float("inf")
        neighbours[rows] = similarity.topk(edges, dim=1).indices
    return neighbours


def graph_chunk_rows(n_items: int, chunk_size: int) -> int:
    """Items per chunk of the graph build: chunk_size, or fewer so that a chunk's [C, N + 1] similarities fit in
    GRAPH_BLOCK_ELEMENTS (at 10^6 items: 16 rows, against 2,048 x 10^6 floats = 8 GB unbounded)."""
    return max(1, min(int(chunk_size), GRAPH_BLOCK_ELEMENTS // (int(n_items) + 1)))


def random_start_items(batch_size: int, n_items: int, num_beams: int, seed: int, device) -> torch.Tensor:
    """[B, S] with S = min(num_beams, N): per row S distinct random items of 1..N (the official code starts from
    random items), a uniform sample without replacement in uniformly random order. Robert Floyd's sampling (step j
    of S: draw t uniformly in 1..N - S + j; take t, or N - S + j if t is taken already), then a random order of
    the S items: O(S^2) per row, never a row of N random keys (1 GB at 256 users x 10^6 items). Every row reads its
    own 2 S numbers of one seeded stream, so a fixed seed makes an evaluation repeatable and row i is the same for
    any batch size."""
    count = min(int(num_beams), int(n_items))
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    # float64: floor(u x j) is uniform on 0..j-1 up to j / 2^53 (float32's 2^-24 would favour some items at 10^6)
    draws = torch.rand(batch_size, 2, count, generator=generator, dtype=torch.float64)
    chosen = torch.zeros(batch_size, count, dtype=torch.long)
    for step in range(count):  # a loop over the S starts, never over items
        top = n_items - count + step + 1
        pick = (draws[:, 0, step] * top).long().clamp(max=top - 1) + 1  # uniform on 1..top
        taken = (chosen[:, :step] == pick.unsqueeze(1)).any(dim=1)
        chosen[:, step] = torch.where(taken, torch.full_like(pick, top), pick)
    order = draws[:, 1].argsort(dim=1)
    return chosen.gather(1, order).to(device)


@torch.no_grad()
def graph_topk(score_fn, neighbours: torch.Tensor, start_items: torch.Tensor, k: int, num_beams: int,
               propagation_steps: int):
    """score_fn(items long [B, C]) -> float [B, C] (the exact item score for those candidates only).
    neighbours [N + 1, E] from build_item_graph; start_items [B, S] in 1..N.
    Returns (items long [B, k] with -1 where fewer than k distinct items were reached, scores [B, k])."""
    candidates = start_items
    scores = mask_duplicates(candidates, score_fn(candidates))
    for _ in range(int(propagation_steps)):
        keep = min(num_beams, candidates.shape[1])
        top_scores, top_index = scores.topk(keep, dim=1)
        beams = candidates.gather(1, top_index)
        expanded = neighbours[beams].flatten(1)  # [B, keep * E]
        candidates = torch.cat([beams, expanded], dim=1)
        scores = torch.cat([top_scores, score_fn(expanded)], dim=1)
        scores = mask_duplicates(candidates, scores)
    keep = min(k, candidates.shape[1])
    top_scores, top_index = scores.topk(keep, dim=1)
    items = candidates.gather(1, top_index).masked_fill(torch.isinf(top_scores) & (top_scores < 0), -1)
    if keep < k:
        pad = k - keep
        items = torch.cat([items, items.new_full((len(items), pad), -1)], dim=1)
        top_scores = torch.cat([top_scores, top_scores.new_full((len(items), pad), -float("inf"))], dim=1)
    return items, top_scores
