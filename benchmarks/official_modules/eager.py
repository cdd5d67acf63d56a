r"""EAGER with the official module (yewzz/EAGER) inside our pipeline: benchmarks/official_parity.py's module swap.

The official code is imported at run time from a checkout given by path (nothing of it is copied here):
`lib/HF_Model.py` (HFTransformerModel: HF BERT encoder-decoder, tree-structured output over the decoder's token
embeddings, the contrastive and the content-guided reconstruction / estimation losses), `lib/Trm4Rec_trainer.py`
(Trm4Rec: `update_model`, the beam search `predict`, `compute_scores` used by the rerank), `lib/Tree_Model.py` (Tree:
`path_to_label`) and `lib/transformer` (the guide decoder `trans_d_rec`, the sinusoidal positions). Our EAGER keeps
the pipeline: RecBole's split and loaders, the plugin's trainer and metrics, our two k-means trees (the semantic IDs)
and our behaviour / text item vectors.

Glue written here (the official pipeline that cannot be imported: train_rec.py runs its whole training when imported):
- the official input layout: history item ids shifted to the official 0-based ids, right-aligned, the empty slots
  filled with the official padding id `item_num` (generate_training_batches.py: `one_file_data[one_file_data<0] =
  item_num`, windows left-padded with -1 in generate_train_and_test_data.py);
- the trees: `Tree.item_to_code` [item_num + 1, 2] (each level's branch number, the padding row [k-1, k-1] as
  Trm4Rec.__init__) and `Tree.code_to_item` over the k^2 leaves from our codes; a leaf that holds no item maps to -1
  (the official tree is full: Tree_Model.py fills every leaf with an item);
- the training step of train_rec.py (loop at lines 430-457): the semantic tree first, its returned summary guiding
  the behaviour tree, the two losses summed; the two Trm4Rec objects share one encoder (train_rec.py:290);
- the rerank of train_rec.py (`rerank`, lines 382-417): the union of both trees' top-k, scored by the sum over the
  trees of `Trm4Rec.compute_scores`, best k; this is ours (`mask_duplicates`, `top_candidates`) on official scores;
- CPU running: the official module calls `.cuda()` throughout; while it runs, `Tensor.cuda` moves to the model's
  device instead. The official guide decoder's attention imports `fairseq.utils.softmax`; without fairseq installed
  (its sdist builds C++ extensions and pins torchaudio, which would replace this environment's torch) a module
  `fairseq.utils` with fairseq 0.12.2's `softmax` (F.softmax in float32) stands in.

Three literal sizes in HFTransformerModel.forward are the official run's and break other sizes: `view(-1, 96)` and
`view(1, -1, 96)` (d_model 96) and `sample_emb.view(1, 2048, -1)` (2,048 sampled negatives, more than ml-100k's
1,682 items). The forward is compiled here from the checkout's own source with those three literals replaced by the
width of the module and the number of sampled items; nothing else of its text changes. The 96-wide parts built in
HFTransformerModel.__init__ that the guide losses use (`word_pos_encoder`, `trans_d_rec`, `fc_comp`, `start_vec`,
`mask_vec`) are rebuilt with the official classes at d_model when d_model is not 96, and `guide_proj`
(Linear(768, 96): the official text vectors are 768-d) at (our text vectors' width, d_model).
"""
import contextlib
import inspect
import math
import os
import sys
import textwrap
import types
import warnings

OFFICIAL_REPO = "yewzz/EAGER"
OFFICIAL_COMMIT = "beef8ca4aec27df1ff9fcf7ea6cd97e4a571ab5c"
PARTS = (
    "Official (imported from the checkout): the network (HFTransformerModel: HF BertModel encoder shared by the two "
    "trees and one BERT decoder per tree, transformers 4.39.3, with its own initialisation, absolute positions and "
    "the official input layout: item ids, the semantic tree's ids shifted by item_num + 1 into the same table, "
    "padding as item id item_num, unmasked), its training loss (HFTransformerModel.forward through "
    "Trm4Rec.update_model: the tree-structured cross-entropy over the first level's nodes and the parent's children, "
    "the InfoNCE contrastive task against the target's behaviour / text vector with 2,048 sampled items (all of "
    "ml-100k's), weights 1 and 10, temperature 0.3, and the content-guided reconstruction and estimation with the "
    "semantic tree's summary as guide), its per-tree beam search (Trm4Rec.predict: unconstrained, num_beams = "
    "beam_size) and its rerank scores (Trm4Rec.compute_scores). Ours: RecBole's split, loaders and metrics, the "
    "plugin's trainer (optimiser, schedule, validation, best checkpoint), the two k-means trees (semantic IDs) and "
    "the item vectors (SASRec behaviour vectors instead of DIN's, MiniLM text vectors instead of T5's), and the glue: "
    "the input mapping, the two-tree training step and the rerank's union / top-k of train_rec.py (a script, not "
    "importable). The contrastive and guided tasks follow our config: on when gct_weights / stt_weight are non-zero, "
    "at the official weights. The forward is the checkout's source with its three literal sizes (96, 96, 2048) "
    "replaced by the model's; the 96-wide guide parts are rebuilt with the official classes at d_model; fairseq's "
    "float32 softmax stands in for the uninstalled fairseq."
)
SETTINGS = {}
_FORWARD_LITERALS = (
    ("h.masked_select(masked_pos.unsqueeze(-1) == 1).view(-1, 96)",
     "h.masked_select(masked_pos.unsqueeze(-1) == 1).view(-1, self.start_vec.numel())"),
    ("decoder_emb.detach()[:self.end_idx].view(1, -1, 96)",
     "decoder_emb.detach()[:self.end_idx].view(1, -1, self.start_vec.numel())"),
    ("sample_emb.view(1, 2048, -1)", "sample_emb.view(1, len(sample_emb), -1)"),
)


def _official_root(checkout):
    """The folder holding the official `lib` package (the repository keeps it under EAGER/)."""
    for root in (os.path.join(checkout, "EAGER"), checkout):
        if os.path.isfile(os.path.join(root, "lib", "HF_Model.py")):
            return os.path.abspath(root)
    raise FileNotFoundError(f"{checkout}: no EAGER/lib/HF_Model.py (a checkout of {OFFICIAL_REPO})")


def _fairseq_softmax():
    """`fairseq.utils.softmax` for the official MultiheadAttention (lib/transformer/multihead_attention.py:183):
    fairseq itself when installed, otherwise a stand-in module with fairseq 0.12.2's function."""
    try:
        import fairseq.utils  # noqa: F401
        return "fairseq"
    except ImportError:
        pass
    import torch
    import torch.nn.functional as F

    def softmax(x, dim, onnx_trace=False):  # fairseq 0.12.2 fairseq/utils.py:514
        if onnx_trace:
            return F.softmax(x.float(), dim=dim)
        return F.softmax(x, dim=dim, dtype=torch.float32)

    package, stand_in = types.ModuleType("fairseq"), types.ModuleType("fairseq.utils")
    stand_in.softmax = softmax
    package.utils = stand_in
    package.__path__ = []
    sys.modules.setdefault("fairseq", package)
    sys.modules.setdefault("fairseq.utils", stand_in)
    return "stand-in"


def _patched_forward(model_class):
    """HFTransformerModel.forward compiled from the checkout's source with its literal sizes replaced (module
    docstring); line numbers kept, so tracebacks point at the official file."""
    lines, first = inspect.getsourcelines(model_class.forward)
    source = textwrap.dedent("".join(lines))
    for old, new in _FORWARD_LITERALS:
        if source.count(old) != 1:
            raise RuntimeError(f"HFTransformerModel.forward of this checkout does not contain `{old}` once: the "
                               f"adapter was written for {OFFICIAL_REPO}@{OFFICIAL_COMMIT}.")
        source = source.replace(old, new)
    namespace = dict(vars(sys.modules[model_class.__module__]))
    exec(compile("\n" * (first - 1) + source, inspect.getsourcefile(model_class), "exec"), namespace)
    return namespace["forward"]


def swapped_class(checkout):
    """Our EAGER whose network, losses, beam search and rerank scores are the official module's (module docstring)."""
    import torch
    from torch import nn

    root = _official_root(checkout)
    if root not in sys.path:
        sys.path.insert(0, root)
    fairseq_source = _fairseq_softmax()
    from lib.HF_Model import HFTransformerModel
    from lib.Tree_Model import Tree
    from lib.Trm4Rec_trainer import Trm4Rec
    from lib.transformer.decoder import TransformerDecoder
    from lib.transformer.sinusoidal_positional_embedding import SinusoidalPositionalEmbedding

    from recbole_genrec.inference import mask_duplicates, top_candidates
    from recbole_genrec.model import eager as eager_module
    from recbole_genrec.model.eager import EAGER, STREAMS, stream_vectors

    if not os.path.abspath(inspect.getsourcefile(HFTransformerModel)).startswith(root + os.sep):
        raise ImportError(f"`lib` was imported from {inspect.getsourcefile(HFTransformerModel)}, not from {root}: "
                          f"another package named `lib` is on the path (run each adapter in its own process).")
    forward = _patched_forward(HFTransformerModel)

    class PatchedHFTransformerModel(HFTransformerModel):
        """HFTransformerModel with the forward of `_patched_forward` (its three literal sizes the model's own)."""

    PatchedHFTransformerModel.forward = forward
    TYPES = {"behaviour": 0, "semantic": 1}  # train_rec.py: type = [0, 1], 0 for id, 1 for modality

    @contextlib.contextmanager
    def on_device(device):
        """While the official code runs: `Tensor.cuda()` goes to `device` (the model's) unless that is a GPU."""
        original = torch.Tensor.cuda
        if device.type != "cuda":
            def cuda(tensor, target=None, non_blocking=False, memory_format=torch.preserve_format):
                return tensor.to(device if target is None else target)

            torch.Tensor.cuda = cuda
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="To copy construct from a tensor")
                yield
        finally:
            torch.Tensor.cuda = original

    class OfficialModuleEAGER(EAGER):
        def __init__(self, config, dataset):
            super().__init__(config, dataset)
            for name in ("item_embeddings", "decoders", "transfer", "guide_projection", "estimation_head",
                         "gct_projection"):
                if hasattr(self, name):
                    delattr(self, name)  # the official module replaces them
            parts = self.semantic_ids.quality["parts"]
            self.official_item_num = self.n_items - 1  # official ids 0 .. item_num - 1, padding item_num
            self.max_src_len = int(config["MAX_ITEM_LIST_LENGTH"])
            d_model = int(config["d_model"])
            # the contrastive targets (HF_Model.forward reads data_emb on every call, use_con or not): our item
            # vectors without RecBole's padding row, in the official ids
            vectors = {stream: getattr(self, f"{stream}_vectors", None) for stream in STREAMS}
            if any(v is None for v in vectors.values()):
                arrays = stream_vectors(config, dataset, dataset)
                vectors = {stream: torch.from_numpy(arrays[stream]).float() for stream in STREAMS}
            weights = tuple(self.gct_weights[stream] for stream in STREAMS)
            if weights not in ((0.0, 0.0), (1.0, 10.0)) or self.gct_temperature != 0.3:
                raise ValueError(f"The official contrastive task has weights (1, 10) and temperature 0.3 "
                                 f"(HF_Model.py:168-173), on or off: gct_weights {list(weights)}, gct_temperature "
                                 f"{self.gct_temperature} cannot be expressed.")
            if self.stt_weight not in (0.0, 1.0):
                raise ValueError(f"The official guided tasks have weight 1 (HF_Model.py:237, 264): stt_weight "
                                 f"{self.stt_weight} cannot be expressed.")
            self.use_con, self.use_guide = weights != (0.0, 0.0), self.stt_weight > 0
            self.peer, self.shells, first = nn.ModuleDict(), {}, 0
            for stream in STREAMS:
                levels = parts[stream]["levels"]
                codes = self.item_codes[1:, first:first + levels]
                branches = self.vocab_sizes[first]
                first += levels
                if levels != 2:
                    raise ValueError(f"The official EAGER decodes two-level trees only (HF_Model.py: y[:, 0], "
                                     f"y[:, 1]; Trm4Rec_trainer.py:238): the {stream} tree has {levels} levels. "
                                     f"Use tokenizer_params.branches >= {math.ceil(math.sqrt(self.n_items - 1))}.")
                target = vectors[stream][1:].float()
                peer = PatchedHFTransformerModel(
                    src_voc_size=2 * self.official_item_num + 1, tgt_voc_size=branches * branches + 2 + branches,
                    max_src_len=self.max_src_len, max_tgt_len=levels + 1, d_model=d_model,
                    d_model2=target.shape[1], nhead=int(config["num_heads"]), device="cpu",
                    enc_num_layers=int(config["num_encoder_layers"]),
                    dec_num_layers=int(config["num_decoder_layers"]), intermediate_size=int(config["d_ff"]),
                    position_embedding_type="absolute", item_num=self.official_item_num)
                if stream == "semantic":
                    peer.trm.encoder = self.peer["behaviour"].trm.encoder  # train_rec.py:290, one encoder
                if d_model != 96:  # the guide parts' official width is 96 (HF_Model.py:68-78)
                    peer.word_pos_encoder = SinusoidalPositionalEmbedding(d_model, 0, 10)
                    peer.trans_d_rec = TransformerDecoder(num_layers=1, d_model=d_model, num_heads=4)
                    peer.fc_comp = nn.Linear(d_model, 1)
                    peer.start_vec = nn.Parameter(torch.zeros(d_model))
                    peer.mask_vec = nn.Parameter(torch.zeros(d_model))
                for module in peer.trm.modules():  # BERT's dropouts (official: BertConfig's 0.1)
                    if isinstance(module, nn.Dropout):
                        module.p = float(config["dropout"])
                self.peer[stream] = peer
                self.register_buffer(f"{stream}_targets", target, persistent=False)
                # Tree.item_to_code: each level's branch number; padding row [k-1, k-1] (Trm4Rec_trainer.py:238)
                slots = torch.stack([codes[:, 0], codes[:, 1] - codes[:, 0] * branches], dim=1)
                slots = torch.cat([slots, torch.full((1, 2), branches - 1, dtype=slots.dtype)])
                # Tree.code_to_item over the k^2 leaves, in OUR item ids (-1: a leaf without an item)
                leaves = torch.full((branches * branches,), -1, dtype=torch.long)
                leaves[slots[:-1, 0] * branches + slots[:-1, 1]] = torch.arange(1, self.n_items)
                self.register_buffer(f"{stream}_item_to_code", slots, persistent=False)
                self.register_buffer(f"{stream}_code_to_item", leaves, persistent=False)
                self.register_buffer(f"{stream}_card", torch.tensor([float(branches), 1.0]), persistent=False)
                self.shells[stream] = self.trainer_shell(stream, branches, peer)
            guide_in = self.peer["semantic"].d_model2  # the guide: the semantic tree's projected summary
            if self.peer["behaviour"].guide_proj.in_features != guide_in or d_model != 96:
                self.peer["behaviour"].guide_proj = nn.Linear(guide_in, d_model)
                self.peer["semantic"].guide_proj = nn.Linear(guide_in, d_model)  # unused, as officially
            self.fairseq_softmax = fairseq_source

        def trainer_shell(self, stream, branches, peer):
            """A Trm4Rec holding `peer` and the stream's tree, without Trm4Rec.__init__ (which builds or reads the
            tree on 'cuda' and makes its own optimiser): the attributes its methods read."""
            shell = Trm4Rec.__new__(Trm4Rec)
            shell.item_num, shell.k, shell.end_idx, shell.type = self.official_item_num, branches, branches, None
            shell.src_voc_size, shell.tgt_voc_size = 2 * self.official_item_num + 1, branches * branches + 2 + branches
            shell.max_src_len, shell.max_tgt_len, shell.batch_num = self.max_src_len, 3, 0
            shell.trm_model = peer
            shell.tree = Tree(item_num=self.official_item_num, k=branches, construct=False)
            shell.tree.tree_height = 2
            return shell

        def shell(self, stream, device):
            """The stream's Trm4Rec with its tree's tensors on `device` (buffers of this module)."""
            shell = self.shells[stream]
            shell.device = shell.trm_model.device = device
            shell.tree.item_to_code = getattr(self, f"{stream}_item_to_code")
            shell.tree.code_to_item = getattr(self, f"{stream}_code_to_item")
            shell.tree.card = getattr(self, f"{stream}_card")
            return shell

        def official_history(self, interaction):
            """Our history (left-aligned item ids, 0 = padding) in the official layout: official ids (ours - 1),
            right-aligned, padding item_num (never masked: the official mask compares with src_pad = 2 item_num)."""
            items, lengths = self.history(interaction)
            positions = torch.arange(items.shape[1], device=items.device)
            source = positions.unsqueeze(0) - (items.shape[1] - lengths).unsqueeze(1)
            shifted = items.gather(1, source.clamp(min=0)) - 1
            return torch.where(source >= 0, shifted, torch.full_like(shifted, self.official_item_num))

        def calculate_loss(self, interaction):
            batch_x = self.official_history(interaction)
            batch_y = interaction[self.POS_ITEM_ID] - 1
            device = batch_x.device
            loss, guide_feat = 0.0, None
            with on_device(device):
                for stream in reversed(STREAMS):  # train_rec.py:437, the semantic tree first: its summary guides
                    loss_, _, guide_feat = self.shell(stream, device).update_model(
                        batch_x, batch_y, getattr(self, f"{stream}_targets"), type=TYPES[stream],
                        use_con=self.use_con, use_guide=self.use_guide, guide_feat=guide_feat)
                    loss = loss + loss_
            return loss

        @torch.no_grad()
        def generate_topk(self, interaction, k):
            batch_x = self.official_history(interaction)
            device, users = batch_x.device, len(batch_x)
            with on_device(device):
                shells = {stream: self.shell(stream, device) for stream in STREAMS}
                # each tree's beam (Trm4Rec.predict), its top k in our ids (-1: a leaf without an item)
                candidates = torch.cat([shells[stream].predict(batch_x, topk=k, num_beams=self.beam_size,
                                                               type=TYPES[stream]) for stream in STREAMS], dim=1)
                # train_rec.py rerank: the union scored by the sum over the trees of compute_scores
                per_user = candidates.shape[1]
                input_user = batch_x.repeat_interleave(per_user, dim=0)
                input_item = (candidates.clamp(min=1) - 1).flatten()
                scores = sum(shells[stream].compute_scores(input_user, input_item, type=TYPES[stream]).sum(-1)
                             for stream in STREAMS).view(users, per_user)
            scores = mask_duplicates(candidates, scores.float().masked_fill(candidates < 1, float("-inf")))
            return top_candidates(candidates, scores, k)

    # Checkpoints name the model class; the plugin loads them through its allow-list of model modules: the class
    # lives in recbole_genrec.model.eager for this process (benchmarks/peer_module_swap.py does the same).
    OfficialModuleEAGER.__module__ = eager_module.__name__
    OfficialModuleEAGER.__qualname__ = OfficialModuleEAGER.__name__
    eager_module.OfficialModuleEAGER = OfficialModuleEAGER
    return OfficialModuleEAGER
