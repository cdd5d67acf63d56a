"""Weight conversion between `EncoderDecoder` and Hugging Face's `T5ForConditionalGeneration` (T5 v1.0 layout).

Both are the same network: pre-norm RMSNorm blocks without biases, ReLU feed-forward, unscaled attention, relative
position buckets held by the first layer of each stack and shared by all its layers, and one token embedding shared
by the encoder, the decoder and the output projection (whose input is scaled by d_model**-0.5). Conversion is a
renaming of parameters, checked to cover every parameter of both models.

transformers is an optional dependency (it comes with sentence-transformers), imported only when converting.
"""
from typing import TYPE_CHECKING, Dict

import torch
from torch import nn

from recbole_genrec.model.layers.encoder_decoder import EncoderDecoder

if TYPE_CHECKING:
    from transformers import T5Config, T5ForConditionalGeneration

# Ours -> T5's names of the four projections of an attention block.
_ATTENTION_PROJECTIONS = (("query", "q"), ("key", "k"), ("value", "v"), ("output", "o"))


def _attention_names(ours: str, theirs: str) -> Dict[str, str]:
    return {f"{ours}.{a}.weight": f"{theirs}.{b}.weight" for a, b in _ATTENTION_PROJECTIONS}


def _ffn_names(ours: str, theirs: str) -> Dict[str, str]:
    return {f"{ours}.inner.weight": f"{theirs}.wi.weight", f"{ours}.outer.weight": f"{theirs}.wo.weight"}


def parameter_names(num_encoder_layers: int, num_decoder_layers: int) -> Dict[str, str]:
    """Our parameter names -> T5ForConditionalGeneration's, one pair per parameter. T5's tied copies of `shared`
    (encoder/decoder `embed_tokens`, `lm_head`) are the same parameter and not listed."""
    names = {
        "embedding.weight": "shared.weight",
        "encoder_position_bias.embedding.weight":
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        "encoder_norm.weight": "encoder.final_layer_norm.weight",
        "decoder_position_bias.embedding.weight":
            "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        "decoder_norm.weight": "decoder.final_layer_norm.weight",
    }
    for i in range(num_encoder_layers):
        ours, theirs = f"encoder_layers.{i}", f"encoder.block.{i}.layer"
        names[f"{ours}.attention_norm.weight"] = f"{theirs}.0.layer_norm.weight"
        names.update(_attention_names(f"{ours}.attention", f"{theirs}.0.SelfAttention"))
        names[f"{ours}.ffn_norm.weight"] = f"{theirs}.1.layer_norm.weight"
        names.update(_ffn_names(f"{ours}.ffn", f"{theirs}.1.DenseReluDense"))
    for i in range(num_decoder_layers):
        ours, theirs = f"decoder_layers.{i}", f"decoder.block.{i}.layer"
        names[f"{ours}.self_attention_norm.weight"] = f"{theirs}.0.layer_norm.weight"
        names.update(_attention_names(f"{ours}.self_attention", f"{theirs}.0.SelfAttention"))
        names[f"{ours}.cross_attention_norm.weight"] = f"{theirs}.1.layer_norm.weight"
        names.update(_attention_names(f"{ours}.cross_attention", f"{theirs}.1.EncDecAttention"))
        names[f"{ours}.ffn_norm.weight"] = f"{theirs}.2.layer_norm.weight"
        names.update(_ffn_names(f"{ours}.ffn", f"{theirs}.2.DenseReluDense"))
    return names


def _copy_parameters(source: nn.Module, target: nn.Module, names: Dict[str, str]):
    """Copy source parameter `s` into target parameter `names[s]`. Raises ValueError unless `names` pairs every
    parameter of `source` with a distinct parameter of `target` and covers all of `target`'s, shapes equal."""
    source_params, target_params = dict(source.named_parameters()), dict(target.named_parameters())
    unmatched = sorted(source_params.keys() ^ names.keys()) + sorted(target_params.keys() ^ set(names.values()))
    if unmatched or len(names) != len(target_params):
        raise ValueError(f"Cannot convert {type(source).__name__} to {type(target).__name__}: parameters without "
                         f"a counterpart: {unmatched}.")
    with torch.no_grad():
        for source_name, target_name in names.items():
            source_param, target_param = source_params[source_name], target_params[target_name]
            if source_param.shape != target_param.shape:  # copy_ would broadcast instead of failing
                raise ValueError(f"Shape mismatch: {source_name} {tuple(source_param.shape)} vs {target_name} "
                                 f"{tuple(target_param.shape)}.")
            target_param.copy_(source_param)


def t5_config_for(backbone: EncoderDecoder) -> "T5Config":
    """The T5Config of a T5ForConditionalGeneration with `backbone`'s architecture.

    EOS is None: the backbone decodes a fixed number of semantic-ID levels and has no end-of-sequence token.
    """
    from transformers import T5Config

    if backbone.style != "t5":
        raise ValueError(f"to_hf_t5: a {backbone.style!r}-style EncoderDecoder is not a T5 network.")
    if not backbone.tie_embeddings:
        raise ValueError("to_hf_t5: an untied output projection (lm_head) has no place in the T5 v1.0 layout: "
                         "T5ForConditionalGeneration ties lm_head to the shared embedding.")
    if not backbone.encoder_layers:
        raise ValueError("to_hf_t5: this EncoderDecoder has no encoder layers (a decoder over another model's "
                         "memory); T5ForConditionalGeneration needs its own encoder.")
    position_bias = backbone.encoder_position_bias
    return T5Config(
        vocab_size=backbone.vocab_size, d_model=backbone.d_model, d_kv=backbone.d_kv,
        d_ff=backbone.encoder_layers[0].ffn.inner.out_features, num_heads=backbone.num_heads,
        num_layers=len(backbone.encoder_layers), num_decoder_layers=len(backbone.decoder_layers),
        dropout_rate=backbone.dropout.p, feed_forward_proj="relu", tie_word_embeddings=True,
        relative_attention_num_buckets=position_bias.num_buckets,
        relative_attention_max_distance=position_bias.max_distance,
        layer_norm_epsilon=backbone.decoder_norm.eps, decoder_start_token_id=0, pad_token_id=0, eos_token_id=None,
    )


def to_hf_t5(backbone: EncoderDecoder) -> "T5ForConditionalGeneration":
    """A T5ForConditionalGeneration computing the same function as `backbone` (same dtype, device, train/eval)."""
    from transformers import T5ForConditionalGeneration

    hf_model = T5ForConditionalGeneration(t5_config_for(backbone)).to(backbone.embedding.weight)
    names = parameter_names(len(backbone.encoder_layers), len(backbone.decoder_layers))
    _copy_parameters(backbone, hf_model, names)
    return hf_model.train(backbone.training)


def _check_representable(config: "T5Config", backbone: EncoderDecoder):
    """Raise ValueError if `config` describes a network that `backbone` (built from its sizes) does not compute."""
    position_bias = backbone.encoder_position_bias
    # transformers >= 5 says `scale_decoder_outputs`; before, tie_word_embeddings=False meant an unscaled lm_head.
    scaled_output = getattr(config, "scale_decoder_outputs", config.tie_word_embeddings)
    problems = {
        f"feed_forward_proj={config.feed_forward_proj!r} (only 'relu', T5 v1.0)":
            config.is_gated_act or config.dense_act_fn != "relu",
        "an output projection without the d_model**-0.5 scaling of tied T5 v1.0 (T5 v1.1 style)": not scaled_output,
        f"relative_attention_num_buckets={config.relative_attention_num_buckets} "
        f"(only {position_bias.num_buckets})": config.relative_attention_num_buckets != position_bias.num_buckets,
        f"relative_attention_max_distance={config.relative_attention_max_distance} "
        f"(only {position_bias.max_distance})": config.relative_attention_max_distance != position_bias.max_distance,
        f"layer_norm_epsilon={config.layer_norm_epsilon} (only {backbone.decoder_norm.eps})":
            config.layer_norm_epsilon != backbone.decoder_norm.eps,
        f"decoder_start_token_id={config.decoder_start_token_id} (our decoder starts from token 0)":
            config.decoder_start_token_id != 0,
    }
    refused = [problem for problem, applies in problems.items() if applies]
    if refused:
        raise ValueError(f"from_hf_t5: EncoderDecoder cannot represent this T5 model: {'; '.join(refused)}.")


def from_hf_t5(hf_model: "T5ForConditionalGeneration") -> EncoderDecoder:
    """An EncoderDecoder computing the same function as `hf_model` (same dtype, device, train/eval). Raises
    ValueError for a T5 it cannot represent (gated FFN, unscaled or untied output projection, other position
    buckets or layer norm epsilon, a decoder start token other than 0)."""
    config = hf_model.config
    if config.num_layers == 0:
        raise ValueError("from_hf_t5: EncoderDecoder cannot represent this T5 model: it has no encoder layers.")
    shared = hf_model.shared.weight
    for tied in ("encoder.embed_tokens", "decoder.embed_tokens", "lm_head"):
        if hf_model.get_submodule(tied).weight is not shared:
            raise ValueError(f"from_hf_t5: EncoderDecoder cannot represent this T5 model: {tied} is not tied to "
                             f"the shared embedding (we have one token embedding for the encoder, the decoder and "
                             f"the output projection).")
    backbone = EncoderDecoder(config.vocab_size, d_model=config.d_model, num_heads=config.num_heads,
                              d_kv=config.d_kv, d_ff=config.d_ff, num_encoder_layers=config.num_layers,
                              num_decoder_layers=config.num_decoder_layers, dropout=config.dropout_rate,
                              tie_embeddings=True)
    _check_representable(config, backbone)
    backbone = backbone.to(shared)
    names = parameter_names(config.num_layers, config.num_decoder_layers)
    _copy_parameters(hf_model, backbone, {theirs: ours for ours, theirs in names.items()})
    return backbone.train(hf_model.training)
