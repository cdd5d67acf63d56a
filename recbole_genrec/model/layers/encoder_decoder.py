"""Encoder-decoder backbone over semantic-ID tokens: T5-style (TIGER, LETTER, LIGER, MQL4GRec, ColaRec) or
BERT-style (EAGER).

As in T5 (v1.0): pre-norm blocks with RMSNorm, no biases, ReLU feed-forward, dropout after embeddings / every
residual branch / attention weights, relative position buckets (32 buckets, max distance 128) shared by all layers
of a stack (bidirectional in the encoder, causal in the decoder), unscaled dot-product attention with T5's
initialisation (which folds the 1/sqrt(d_kv) into the query weights), and one token embedding shared by the encoder,
the decoder and (by default) the output projection, whose input is scaled by d_model**-0.5 when tied.

Incremental decoding keeps a key/value cache in a `DecoderState`. The encoder memory and its cross-attention
keys/values are stored once per *user* (memory group), not once per beam: the `rows_per_memory` decoding rows of a
group attend to it as extra query positions, so a beam of 20 costs no 20-fold copy of the memory.

`style="bert"` builds the same stacks as BERT's (Hugging Face's BertModel encoder and BertLMHeadModel decoder with
cross-attention, as an EncoderDecoderModel of two BertConfigs): learned absolute positions added to the input
embeddings and a LayerNorm over their sum, post-norm blocks (LayerNorm, eps 1e-12, after each residual sum),
projections and LayerNorms with biases, GELU feed-forward without an inner dropout, dropout on the embeddings, every
residual branch and the attention weights, attention scaled by 1/sqrt(d_kv), every weight initialised at std 0.02,
no final norm or dropout after the last layer, and output logits `hidden @ embedding.T` unscaled.
"""
import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recbole_genrec.model.layers.attention import Dropout, attention

STYLES = ("t5", "bert")
BERT_INIT_STD = 0.02  # BertConfig.initializer_range
BERT_LAYER_NORM_EPS = 1e-12  # BertConfig.layer_norm_eps


def layer_norm(style: str, dim: int) -> nn.Module:
    """The style's normalisation: T5's RMSNorm or BERT's LayerNorm."""
    return RMSNorm(dim) if style == "t5" else nn.LayerNorm(dim, eps=BERT_LAYER_NORM_EPS)


class RMSNorm(nn.Module):
    """T5's LayerNorm: scale only, no mean subtraction, no bias; statistics in float32 (safe under bf16)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, hidden: Tensor) -> Tensor:
        variance = hidden.float().pow(2).mean(-1, keepdim=True)
        normed = hidden.float() * torch.rsqrt(variance + self.eps)
        return self.weight * normed.to(hidden.dtype)


def relative_position_bucket(relative_position: Tensor, bidirectional: bool, num_buckets: int = 32,
                             max_distance: int = 128) -> Tensor:
    """T5's bucketing of (key position - query position): exact buckets for small distances, logarithmic ones up to
    `max_distance`, beyond it the last bucket. Causal (unidirectional) buckets only see non-positive distances."""
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp(min=0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    log_ratio = torch.log(distance.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + (log_ratio * (num_buckets - max_exact)).long()).clamp(max=num_buckets - 1)
    return buckets + torch.where(is_small, distance, large)


class RelativePositionBias(nn.Module):
    """One learned scalar per (bucket, head), added to the attention logits of every layer of a stack."""

    def __init__(self, num_heads: int, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128):
        super().__init__()
        self.bidirectional = bidirectional
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.embedding = nn.Embedding(num_buckets, num_heads)

    def forward(self, query_positions: Tensor, key_positions: Tensor) -> Tensor:
        """Positions: LongTensors [Tq], [Tk] -> bias [1, heads, Tq, Tk]."""
        relative = key_positions[None, :] - query_positions[:, None]
        buckets = relative_position_bucket(relative, self.bidirectional, self.num_buckets, self.max_distance)
        return self.embedding(buckets).permute(2, 0, 1).unsqueeze(0)


class Attention(nn.Module):
    """Multi-head attention; inner width num_heads * d_kv (384 for TIGER). T5: no biases, unscaled dot products (the
    1/sqrt(d_kv) folded into the query's initialisation); BERT: biases, dot products scaled by 1/sqrt(d_kv)."""

    def __init__(self, d_model: int, num_heads: int, d_kv: int, dropout: float, style: str = "t5"):
        super().__init__()
        self.num_heads, self.d_kv, self.dropout = num_heads, d_kv, dropout
        self.scale = 1.0 if style == "t5" else d_kv ** -0.5
        inner, bias = num_heads * d_kv, style == "bert"
        self.query = nn.Linear(d_model, inner, bias=bias)
        self.key = nn.Linear(d_model, inner, bias=bias)
        self.value = nn.Linear(d_model, inner, bias=bias)
        self.output = nn.Linear(inner, d_model, bias=bias)

    def split_heads(self, hidden: Tensor, *projections: nn.Linear) -> Tuple[Tensor, ...]:
        """[N, T, d_model] -> one [N, heads, T, d_kv] per projection. Several projections of the same input (query,
        key, value) run as one matmul over their concatenated weights: one pass over the input instead of three,
        forward and backward. The weights stay separate parameters (the state dict and HF's layout are unchanged)."""
        n, t, _ = hidden.shape
        weight = projections[0].weight if len(projections) == 1 else torch.cat([p.weight for p in projections])
        bias = None if projections[0].bias is None else torch.cat([p.bias for p in projections])
        out = F.linear(hidden, weight, bias).view(n, t, len(projections), self.num_heads, self.d_kv)
        return out.permute(2, 0, 3, 1, 4).unbind(0)

    def attend(self, query: Tensor, key: Tensor, value: Tensor, bias: Optional[Tensor] = None,
               allowed: Optional[Tensor] = None) -> Tensor:
        """query [N, H, Tq, d], key/value [N, H, Tk, d]; `bias` float broadcastable to [N, H, Tq, Tk]; `allowed`
        bool broadcastable likewise (False = masked). Returns the output projection [N, Tq, d_model]."""
        mask = None if bias is None else bias.to(query.dtype)
        if allowed is not None:
            # A large finite negative (not -inf) keeps fully masked rows finite; built in the query's dtype so it
            # cannot overflow to -inf when cast (bf16 / fp16 under autocast).
            base = torch.zeros((), dtype=query.dtype, device=query.device) if mask is None else mask
            mask = base.masked_fill(~allowed, torch.finfo(query.dtype).min)
        out = attention(query, key, value, mask, dropout_p=self.dropout, training=self.training,
                        scale=self.scale)
        n, h, t, d = out.shape
        return self.output(out.transpose(1, 2).reshape(n, t, h * d))


class FeedForward(nn.Module):
    """T5: ReLU, dropout on the inner activations, no biases. BERT: GELU (erf), no inner dropout, biases."""

    def __init__(self, d_model: int, d_ff: int, dropout: float, style: str = "t5"):
        super().__init__()
        bert = style == "bert"
        self.inner = nn.Linear(d_model, d_ff, bias=bert)
        self.outer = nn.Linear(d_ff, d_model, bias=bert)
        self.activation = F.gelu if bert else F.relu
        self.dropout = Dropout(0.0 if bert else dropout)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.outer(self.dropout(self.activation(self.inner(hidden))))


class Block(nn.Module):
    """What both layers share: a residual branch with its norm, before the branch (T5: x + drop(f(norm(x)))) or
    after the sum (BERT: norm(x + drop(f(x))))."""

    def __init__(self, dropout: float, style: str):
        super().__init__()
        self.post_norm = style == "bert"
        self.dropout = Dropout(dropout)

    def residual(self, hidden: Tensor, norm: nn.Module, branch) -> Tensor:
        if self.post_norm:
            return norm(hidden + self.dropout(branch(hidden)))
        return hidden + self.dropout(branch(norm(hidden)))


class EncoderLayer(Block):
    def __init__(self, d_model, num_heads, d_kv, d_ff, dropout, style="t5"):
        super().__init__(dropout, style)
        self.attention_norm = layer_norm(style, d_model)
        self.attention = Attention(d_model, num_heads, d_kv, dropout, style)
        self.ffn_norm = layer_norm(style, d_model)
        self.ffn = FeedForward(d_model, d_ff, dropout, style)

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        """`mask`: the position bias (T5) with the padding folded in (EncoderDecoder.encode_embeddings)."""
        attention = self.attention

        def attend(x):
            return attention.attend(*attention.split_heads(x, attention.query, attention.key, attention.value), mask)

        hidden = self.residual(hidden, self.attention_norm, attend)
        return self.residual(hidden, self.ffn_norm, self.ffn)


class DecoderLayer(Block):
    def __init__(self, d_model, num_heads, d_kv, d_ff, dropout, style="t5"):
        super().__init__(dropout, style)
        self.self_attention_norm = layer_norm(style, d_model)
        self.self_attention = Attention(d_model, num_heads, d_kv, dropout, style)
        self.cross_attention_norm = layer_norm(style, d_model)
        self.cross_attention = Attention(d_model, num_heads, d_kv, dropout, style)
        self.ffn_norm = layer_norm(style, d_model)
        self.ffn = FeedForward(d_model, d_ff, dropout, style)

    def memory_key_values(self, memory: Tensor) -> Tuple[Tensor, Tensor]:
        """Cross-attention keys/values of the encoder output [G, S, d] -> 2 x [G, H, S, d_kv]."""
        return self.cross_attention.split_heads(memory, self.cross_attention.key, self.cross_attention.value)

    def forward(self, hidden: Tensor, self_bias: Optional[Tensor], self_allowed: Optional[Tensor],
                past_key: Optional[Tensor], past_value: Optional[Tensor], memory_key: Tensor, memory_value: Tensor,
                memory_allowed: Tensor, rows_per_memory: int) -> Tuple[Tensor, Tensor, Tensor]:
        """hidden [N, T, d] for N = G * rows_per_memory decoding rows (row i reads memory group i // rows_per_memory).
        past_key/value [N, H, t, d_kv] or None. Returns (hidden, self-attention keys, values incl. the new ones)."""
        attn, cache = self.self_attention, {}

        def self_attend(x):
            q, k, v = attn.split_heads(x, attn.query, attn.key, attn.value)
            if past_key is not None:
                k, v = torch.cat([past_key, k], dim=2), torch.cat([past_value, v], dim=2)
            cache["key"], cache["value"] = k, v
            return attn.attend(q, k, v, self_bias, self_allowed)

        def cross_attend(x):
            # the rows of one memory group become extra query positions of that group
            q, = self.cross_attention.split_heads(x, self.cross_attention.query)  # [N, H, T, d_kv]
            n, h, t, d = q.shape
            groups = n // rows_per_memory
            q = q.view(groups, rows_per_memory, h, t, d).transpose(1, 2).reshape(groups, h, rows_per_memory * t, d)
            out = self.cross_attention.attend(q, memory_key, memory_value, None, memory_allowed[:, None, None, :])
            return out.view(n, t, -1)  # [G, r*T, d_model] is row-major in (row, step)

        hidden = self.residual(hidden, self.self_attention_norm, self_attend)
        hidden = self.residual(hidden, self.cross_attention_norm, cross_attend)
        return self.residual(hidden, self.ffn_norm, self.ffn), cache["key"], cache["value"]


@dataclass
class DecoderState:
    """Key/value cache of incremental decoding.

    memory_keys/values: per decoder layer [G, H, S, d_kv], one per memory group (user), never copied per beam.
    memory_mask: bool [G, S] (True = real encoder token). self_keys/values: per layer [N, H, length, d_kv] with
    N = G * rows_per_memory rows ordered group-major (rows g*r .. g*r + r - 1 belong to group g).
    """
    memory_keys: List[Tensor]
    memory_values: List[Tensor]
    memory_mask: Tensor
    self_keys: List[Tensor]
    self_values: List[Tensor]
    rows_per_memory: int
    length: int

    @property
    def device(self) -> torch.device:
        return self.memory_mask.device

    @property
    def num_rows(self) -> int:
        return self.memory_mask.shape[0] * self.rows_per_memory

    def index_select(self, index: Tensor) -> "DecoderState":
        """Rows `index` [N'] of this state, e.g. the parents of the surviving beams, or
        `arange(G).repeat_interleave(beam)` to give every user `beam` rows. New row j must come from a row of memory
        group j // (N' / G) (beams never move between users); this is asserted on the device without a sync."""
        groups = self.memory_mask.shape[0]
        new_rows = index.numel()
        if new_rows % groups:
            raise ValueError(f"index_select of {new_rows} rows on a state with {groups} memory groups: rows must be "
                             f"a multiple of the number of groups.")
        rows_per_memory = new_rows // groups
        expected_group = torch.arange(new_rows, device=index.device) // rows_per_memory
        torch._assert_async((index // self.rows_per_memory == expected_group).all())
        return DecoderState(
            memory_keys=self.memory_keys, memory_values=self.memory_values, memory_mask=self.memory_mask,
            self_keys=[k.index_select(0, index) for k in self.self_keys],
            self_values=[v.index_select(0, index) for v in self.self_values],
            rows_per_memory=rows_per_memory, length=self.length,
        )


class EncoderDecoder(nn.Module):
    """Encoder-decoder over tokens, T5-style or BERT-style (`style`, module docstring). Token 0 is PAD and the
    decoder start token (T5's convention).

    Args:
        vocab_size: number of input/output tokens (special + semantic-ID tokens + any extra, e.g. user tokens).
        tie_embeddings: share the token embedding with the output projection (T5 v1.0); False = separate lm head.
        start_init_std: initial std of the decoder start token's embedding row (token 0), e.g. 0.02 as a learned
            BOS vector (cornac's TIGER); None = the style's (T5: std 1.0 like every other row).
        style: "t5" or "bert" (module docstring).
        max_positions: the length of BERT's learned position tables (one per stack): the longest input of either
            stack. Only for style "bert" (T5's relative buckets have no length).
    """

    def __init__(self, vocab_size: int, d_model: int = 128, num_heads: int = 6, d_kv: int = 64, d_ff: int = 1024,
                 num_encoder_layers: int = 4, num_decoder_layers: int = 4, dropout: float = 0.1,
                 tie_embeddings: bool = True, start_init_std: Optional[float] = None, style: str = "t5",
                 max_positions: Optional[int] = None):
        super().__init__()
        if style not in STYLES:
            raise ValueError(f"EncoderDecoder style {style!r}: one of {', '.join(STYLES)}.")
        if (style == "bert") != (max_positions is not None):
            raise ValueError("EncoderDecoder: max_positions is the length of BERT's position tables: needed by "
                             "style 'bert', meaningless for 't5' (relative buckets).")
        self.vocab_size, self.d_model, self.num_heads, self.d_kv = vocab_size, d_model, num_heads, d_kv
        self.tie_embeddings = tie_embeddings
        self.start_init_std = start_init_std
        self.style = style
        bert = style == "bert"
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.dropout = Dropout(dropout)
        # num_encoder_layers 0: a decoder that attends to another model's encoder (EAGER's second stream). The
        # registration order below is kept as it was: it fixes the initialisation's random stream (reproducibility).
        if num_encoder_layers and bert:
            self.encoder_positions = nn.Embedding(max_positions, d_model)
            self.encoder_embedding_norm = layer_norm(style, d_model)
        elif num_encoder_layers:
            self.encoder_position_bias = RelativePositionBias(num_heads, bidirectional=True)
        self.encoder_layers = nn.ModuleList(
            EncoderLayer(d_model, num_heads, d_kv, d_ff, dropout, style) for _ in range(num_encoder_layers))
        if num_encoder_layers and not bert:  # post-norm layers end normalised
            self.encoder_norm = RMSNorm(d_model)
        if bert:
            self.decoder_positions = nn.Embedding(max_positions, d_model)
            self.decoder_embedding_norm = layer_norm(style, d_model)
        else:
            self.decoder_position_bias = RelativePositionBias(num_heads, bidirectional=False)
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(d_model, num_heads, d_kv, d_ff, dropout, style) for _ in range(num_decoder_layers))
        if not bert:
            self.decoder_norm = RMSNorm(d_model)
        self.lm_head = None if tie_embeddings else nn.Linear(d_model, vocab_size, bias=False)
        self.apply(self._init_weights)

    @property
    def embedding_init_std(self) -> float:
        """The initial std of the token rows: T5's 1.0, BERT's 0.02 (for inputs embedded outside, e.g. EAGER's
        item-ID rows, to start at the same scale)."""
        return 1.0 if self.style == "t5" else BERT_INIT_STD

    @property
    def output_scale(self) -> float:
        """The tied output projection's input scale: T5's d_model**-0.5, BERT's 1 (hidden @ embedding.T)."""
        return self.d_model ** -0.5 if self.style == "t5" else 1.0

    def _init_weights(self, module: nn.Module):
        """T5's initialisation (Mesh TensorFlow): with unscaled attention, the query absorbs 1/sqrt(d_kv). An untied
        lm head keeps nn.Linear's default (uniform, std (3 d)^-0.5, the output logits' scale of the tied head)
        instead of HF T5 v1.1's std 1.0, whose logits start at std sqrt(d): with cornac's initialisation our TIGER
        matches cornac's (BENCHMARKS, parity). BERT's (BertPreTrainedModel._init_weights): every linear and
        embedding weight at std 0.02, biases 0, LayerNorms 1 and 0 (PyTorch's defaults)."""
        if self.style == "bert":
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=BERT_INIT_STD)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if module is self.embedding and self.start_init_std is not None:
                with torch.no_grad():
                    module.weight[0].normal_(std=self.start_init_std)
        elif module is self.embedding:
            nn.init.normal_(module.weight, std=1.0)
            if self.start_init_std is not None:
                with torch.no_grad():
                    module.weight[0].normal_(std=self.start_init_std)
        elif isinstance(module, RelativePositionBias):
            nn.init.normal_(module.embedding.weight, std=self.d_model ** -0.5)
        elif isinstance(module, Attention):
            nn.init.normal_(module.query.weight, std=(self.d_model * self.d_kv) ** -0.5)
            nn.init.normal_(module.key.weight, std=self.d_model ** -0.5)
            nn.init.normal_(module.value.weight, std=self.d_model ** -0.5)
            nn.init.normal_(module.output.weight, std=(self.num_heads * self.d_kv) ** -0.5)
        elif isinstance(module, FeedForward):
            nn.init.normal_(module.inner.weight, std=self.d_model ** -0.5)
            nn.init.normal_(module.outer.weight, std=module.inner.out_features ** -0.5)

    # ---- what both stacks share ----------------------------------------------------------------------------------
    def stack_inputs(self, hidden: Tensor, positions: Tensor, stack: str) -> Tensor:
        """A stack's input embeddings [N, T, d] at `positions` [T]: BERT adds its learned positions and normalises
        the sum; then dropout (both styles)."""
        if self.style == "bert":
            hidden = getattr(self, f"{stack}_embedding_norm")(hidden + getattr(self, f"{stack}_positions")(positions))
        return self.dropout(hidden)

    def position_bias(self, stack: str, query_positions: Tensor, key_positions: Tensor) -> Optional[Tensor]:
        """T5's relative position bias [1, heads, Tq, Tk] of a stack; None for BERT (positions are in the input)."""
        if self.style == "bert":
            return None
        return getattr(self, f"{stack}_position_bias")(query_positions, key_positions)

    def stack_output(self, hidden: Tensor, stack: str) -> Tensor:
        """The last layer's output -> the stack's: T5's final norm and dropout; BERT's post-norm layers end
        normalised, with no dropout after the last."""
        if self.style == "bert":
            return hidden
        return self.dropout(getattr(self, f"{stack}_norm")(hidden))

    # ---- encoder ----------------------------------------------------------------------------------------------
    def encode(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None,
               inputs_embeds_extra: Optional[Tensor] = None) -> Tensor:
        """input_ids [B, S], attention_mask bool [B, S] (True = real token; None = all real), inputs_embeds_extra
        [B, S, d] added to the token embeddings (LIGER's projected text embeddings) -> memory [B, S, d]."""
        hidden = self.embedding(input_ids)
        if inputs_embeds_extra is not None:
            hidden = hidden + inputs_embeds_extra.to(hidden.dtype)
        return self.encode_embeddings(hidden, attention_mask)

    def encode_embeddings(self, hidden: Tensor, attention_mask: Optional[Tensor] = None) -> Tensor:
        """The encoder on input embeddings [B, S, d] that are not this model's tokens (EAGER encodes item-ID
        embeddings) -> memory [B, S, d]."""
        if not self.encoder_layers:
            raise ValueError("This EncoderDecoder was built without encoder layers: encode with the model whose "
                             "memory its decoder attends to.")
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        hidden = self.stack_inputs(hidden, positions, "encoder")
        bias = self.position_bias("encoder", positions, positions)
        if bias is None:
            bias = hidden.new_zeros((), dtype=torch.float32).expand(1, 1, 1, hidden.shape[1])
        # Padding folded into the position bias once for all layers: a large finite negative (not -inf, so a fully
        # padded row stays finite), bf16's minimum, which stays finite when a layer casts the mask to bf16 under
        # autocast (float32's minimum would round to -inf there).
        mask = bias.masked_fill(~attention_mask.bool()[:, None, None, :], torch.finfo(torch.bfloat16).min)
        for layer in self.encoder_layers:
            hidden = layer(hidden, mask)
        return self.stack_output(hidden, "encoder")

    # ---- decoder, teacher forcing -----------------------------------------------------------------------------
    def decode(self, decoder_input_ids: Tensor, memory: Tensor, memory_mask: Optional[Tensor] = None) -> Tensor:
        """Teacher forcing with a causal mask: decoder_input_ids [B, T] (starting with the start token), memory
        [B, S, d], memory_mask bool [B, S] -> hidden [B, T, d] (before the output projection)."""
        return self.decode_embeddings(self.embedding(decoder_input_ids), memory, memory_mask)

    def decode_embeddings(self, hidden: Tensor, memory: Tensor, memory_mask: Optional[Tensor] = None,
                          causal: bool = True) -> Tensor:
        """The decoder on input embeddings [B, T, d] -> hidden [B, T, d]; `causal=False` lets every position see
        the whole input (EAGER's transfer task reconstructs a masked code from both sides)."""
        if memory_mask is None:
            memory_mask = torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        hidden = self.stack_inputs(hidden, positions, "decoder")
        bias = self.position_bias("decoder", positions, positions)
        allowed = positions[None, :] <= positions[:, None] if causal else None
        for layer in self.decoder_layers:
            memory_key, memory_value = layer.memory_key_values(memory)
            hidden, _, _ = layer(hidden, bias, allowed, None, None, memory_key, memory_value, memory_mask.bool(), 1)
        return self.stack_output(hidden, "decoder")

    def teacher_forced_logits(self, target: Tensor, memory: Tensor, memory_mask: Optional[Tensor] = None) -> Tensor:
        """Logits [B, T, vocab] predicting target tokens [B, T] from the start token and target[:, :-1]."""
        decoder_input = torch.cat([torch.zeros_like(target[:, :1]), target[:, :-1]], dim=1)  # 0 = start (PAD)
        return self.lm_logits(self.decode(decoder_input, memory, memory_mask))

    def lm_logits(self, hidden: Tensor) -> Tensor:
        """hidden [..., d] -> logits [..., vocab]."""
        if self.tie_embeddings:
            return F.linear(hidden * self.output_scale, self.embedding.weight)
        return self.lm_head(hidden)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, decoder_input_ids: Tensor,
                inputs_embeds_extra: Optional[Tensor] = None) -> Tensor:
        """Teacher-forced logits [B, T, vocab]."""
        memory = self.encode(input_ids, attention_mask, inputs_embeds_extra)
        return self.lm_logits(self.decode(decoder_input_ids, memory, attention_mask))

    # ---- decoder, incremental ---------------------------------------------------------------------------------
    def start_decoding(self, memory: Tensor, memory_mask: Optional[Tensor] = None) -> DecoderState:
        """State with one decoding row per memory (user), cross-attention keys/values computed once per layer.
        The first `decode_step` takes the start token (PAD)."""
        if memory_mask is None:
            memory_mask = torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)
        keys, values = [], []
        for layer in self.decoder_layers:
            key, value = layer.memory_key_values(memory)
            keys.append(key)
            values.append(value)
        # Empty self-attention cache in the projections' dtype (bf16 under autocast).
        empty = memory.new_zeros(memory.shape[0], self.num_heads, 0, self.d_kv,
                                 dtype=keys[0].dtype if keys else memory.dtype)
        return DecoderState(
            memory_keys=keys, memory_values=values, memory_mask=memory_mask.bool(),
            self_keys=[empty] * len(self.decoder_layers), self_values=[empty] * len(self.decoder_layers),
            rows_per_memory=1, length=0,
        )

    def decode_step(self, last_token: Tensor, state: DecoderState) -> Tuple[Tensor, DecoderState]:
        """One decoding step for every row: last_token [N] -> (logits [N, vocab], state with the step appended)."""
        hidden, state = self.decode_step_hidden(last_token, state)
        return self.lm_logits(hidden), state

    def decode_step_hidden(self, last_token: Tensor, state: DecoderState) -> Tuple[Tensor, DecoderState]:
        """`decode_step` before the output projection: (hidden [N, d], new state), for callers that score a few
        tokens per row only (EAGER's tree-structured softmax)."""
        return self.decode_step_embedded(self.embedding(last_token), state)

    def decode_step_embedded(self, embedded: Tensor, state: DecoderState) -> Tuple[Tensor, DecoderState]:
        """`decode_step_hidden` on an input embedding [N, d] that is not this model's token (ColaRec's per-level
        code embeddings) -> (hidden [N, d], new state)."""
        device = embedded.device
        step = torch.arange(state.length, state.length + 1, device=device)
        hidden = self.stack_inputs(embedded[:, None, :], step, "decoder")
        bias = self.position_bias("decoder", step, torch.arange(state.length + 1, device=device))
        new_keys, new_values = [], []
        for i, layer in enumerate(self.decoder_layers):
            hidden, keys, values = layer(hidden, bias, None, state.self_keys[i], state.self_values[i],
                                         state.memory_keys[i], state.memory_values[i], state.memory_mask,
                                         state.rows_per_memory)
            new_keys.append(keys)
            new_values.append(values)
        hidden = self.stack_output(hidden, "decoder")
        new_state = DecoderState(state.memory_keys, state.memory_values, state.memory_mask, new_keys, new_values,
                                 state.rows_per_memory, state.length + 1)
        return hidden[:, 0], new_state
