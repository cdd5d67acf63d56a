"""GPT-2-style decoder-only transformer (RPG's backbone): learned positions, pre-LayerNorm blocks, causal
self-attention, GELU MLP (GPT-2's tanh approximation, `gelu_new`), final LayerNorm, GPT-2's initialisation (std 0.02,
the residual projections 0.02 / sqrt(2 x layers)). It takes input embeddings (RPG embeds an item as the mean of its
digit embeddings) and returns one hidden state per position."""
import math

import torch
import torch.nn as nn

from recbole_genrec.model.layers.attention import Dropout, attention


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model, num_heads, attn_dropout, resid_dropout):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.attn_dropout = attn_dropout
        self.resid_dropout = Dropout(resid_dropout)

    def forward(self, x, key_padding_mask=None):
        """x [B, T, D]; key_padding_mask bool [B, T], True = real token."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()[None, None]
        if key_padding_mask is not None:
            # a query always sees itself, so no row is fully masked (padded queries are ignored downstream)
            mask = mask & (key_padding_mask[:, None, None, :] | torch.eye(t, dtype=torch.bool, device=x.device))
        out = attention(q, k, v, mask, dropout_p=self.attn_dropout, training=self.training)
        return self.resid_dropout(self.proj(out.transpose(1, 2).reshape(b, t, d)))


class DecoderBlock(nn.Module):
    def __init__(self, d_model, num_heads, d_ff, attn_dropout, resid_dropout, layer_norm_eps):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.attn = CausalSelfAttention(d_model, num_heads, attn_dropout, resid_dropout)
        self.ln_2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.GELU(approximate="tanh"), nn.Linear(d_ff, d_model), Dropout(resid_dropout)
        )

    def forward(self, x, key_padding_mask=None):
        x = x + self.attn(self.ln_1(x), key_padding_mask)
        return x + self.mlp(self.ln_2(x))


class DecoderOnly(nn.Module):
    """inputs_embeds [B, T, D] (+ optional bool mask [B, T], True = real) -> hidden states [B, T, D].
    Dropouts follow GPT-2's names: embd (on input + position embeddings), attn (attention weights), resid."""

    def __init__(self, d_model=448, num_heads=4, d_ff=1024, num_layers=2, max_positions=50,
                 embd_dropout=0.5, attn_dropout=0.5, resid_dropout=0.0, layer_norm_eps=1e-5):
        super().__init__()
        self.position = nn.Embedding(max_positions, d_model)
        self.drop = Dropout(embd_dropout)
        self.blocks = nn.ModuleList(
            DecoderBlock(d_model, num_heads, d_ff, attn_dropout, resid_dropout, layer_norm_eps)
            for _ in range(num_layers)
        )
        self.ln_f = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.apply(self._init_weights)
        # GPT-2's scaled init of the projections that write into the residual stream (HF GPT2PreTrainedModel:
        # c_proj weights at 0.02 / sqrt(2 x layers)), so the stream's variance does not grow with depth
        for block in self.blocks:
            for projection in (block.attn.proj, block.mlp[2]):
                nn.init.normal_(projection.weight, std=0.02 / math.sqrt(2 * num_layers))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, inputs_embeds, mask=None):
        t = inputs_embeds.shape[1]
        if t > self.position.num_embeddings:
            raise ValueError(f"sequence of {t} positions exceeds max_positions {self.position.num_embeddings}")
        positions = torch.arange(t, device=inputs_embeds.device)
        x = self.drop(inputs_embeds + self.position(positions)[None])
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_f(x)
