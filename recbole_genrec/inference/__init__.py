"""Decoding strategies: the shared batched (constrained) beam search and its prefix tables, RPG's graph decoding,
candidate re-ranking (LIGER's dense scores) and duplicate masking (RPG, EAGER)."""
from recbole_genrec.inference.beam_search import BeamSearchOutput, beam_search, check_beam_size, generate_items
from recbole_genrec.inference.graph_decoding import build_item_graph, graph_topk, random_start_items
from recbole_genrec.inference.prefix import PrefixConstraints, SemanticIdVocab
from recbole_genrec.inference.rerank import (mask_duplicates, rerank_candidates, rerank_scored_candidates,
                                             top_candidates)

__all__ = ["BeamSearchOutput", "PrefixConstraints", "SemanticIdVocab", "beam_search", "build_item_graph",
           "check_beam_size", "generate_items", "graph_topk", "mask_duplicates", "random_start_items",
           "rerank_candidates", "rerank_scored_candidates", "top_candidates"]
