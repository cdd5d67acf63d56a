"""The RQ-VAE tokenizers as their recipes fit them: TIGER's (the paper: Adagrad as TensorFlow defines it) and
LETTER's (as the official HonghuiBao2000/LETTER code: the commitment of levels >= 1 gives the encoder no gradient,
the checkpoint of the lowest collision rate, the diversity groups' size bounds)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recbole_genrec.tokenization import balanced_kmeans, build_tokenizer
from recbole_genrec.tokenization.kmeans import fill_to_minimum
from recbole_genrec.tokenization.letter import (
    CollaborativeRQVAE,
    LETTERTokenizer,
    group_size_bounds,
    init_size_bounds,
)
from recbole_genrec.tokenization.rqvae import ResidualQuantizedVAE, RQVAETokenizer


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _vectors(n=120, dim=12, seed=0):
    """[n + 1, dim], row 0 = padding."""
    rng = np.random.default_rng(seed)
    return np.vstack([np.zeros((1, dim)), rng.normal(size=(n, dim))]).astype(np.float32)


# ---- commitment of levels >= 1 ----------------------------------------------------------------------------------
class CommitmentOfDeeperLevelsOnly:
    """level_loss = beta * ||r_l - sg[e_l]||^2 for l >= 1, nothing else."""

    def level_loss(self, level, residual, chosen, codes):
        if level == 0:
            return residual.new_zeros(())
        return self.beta * F.mse_loss(residual, chosen.detach())


class LETTERCommitmentOnly(CommitmentOfDeeperLevelsOnly, CollaborativeRQVAE):
    pass


class TIGERCommitmentOnly(CommitmentOfDeeperLevelsOnly, ResidualQuantizedVAE):
    pass


def _encoder_grads(network, inputs):
    network.zero_grad(set_to_none=True)
    _, _, loss = network.quantize(network.encoder(inputs))
    if loss.requires_grad:  # a loss of detached residuals alone has no graph at all
        loss.backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in network.encoder.parameters()]


def _network(cls, detach_residuals, seed=0):
    torch.manual_seed(seed)
    network = cls(input_dim=12, hidden_dims=[16], latent_dim=4, num_levels=3, codebook_size=8, beta=0.25,
                  detach_residuals=detach_residuals)
    network.codebooks.data.normal_()  # codes of the residuals' scale, so every level picks different codes
    return network


def test_letter_commitment_of_levels_after_the_first_gives_the_encoder_no_gradient():
    inputs = torch.from_numpy(_vectors()[1:])
    letter = _encoder_grads(_network(LETTERCommitmentOnly, detach_residuals=True), inputs)
    assert all(torch.count_nonzero(grad) == 0 for grad in letter)
    # Control: the TIGER paper's loss as written (r_{l+1} = r_l - sg[e_l]) trains the encoder from every level.
    tiger = _encoder_grads(_network(TIGERCommitmentOnly, detach_residuals=False), inputs)
    assert any(torch.count_nonzero(grad) > 0 for grad in tiger)


def test_letter_encoder_gradient_is_the_same_with_and_without_the_deeper_commitment_terms():
    inputs = torch.from_numpy(_vectors()[1:])
    full = _network(CollaborativeRQVAE, detach_residuals=True)
    without = _network(CollaborativeRQVAE, detach_residuals=True)
    # The same network, the commitment of levels >= 1 removed (beta 0 there).
    original = without.level_loss

    def level_loss(level, residual, chosen, codes):
        if level == 0:
            return original(level, residual, chosen, codes)
        return F.mse_loss(chosen, residual.detach()) / without.num_levels

    without.level_loss = level_loss
    for with_terms, without_terms in zip(_encoder_grads(full, inputs), _encoder_grads(without, inputs)):
        assert torch.allclose(with_terms, without_terms, atol=1e-7)


def test_letter_and_tiger_defaults_of_the_residual_gradient():
    assert LETTERTokenizer.default_params["detach_residuals"] is True
    assert RQVAETokenizer.default_params["detach_residuals"] is False
    # The same codes either way: only gradients differ.
    inputs = torch.from_numpy(_vectors()[1:])
    letter, tiger = _network(ResidualQuantizedVAE, True), _network(ResidualQuantizedVAE, False)
    assert torch.equal(letter.quantize(letter.encoder(inputs))[1], tiger.quantize(tiger.encoder(inputs))[1])


# ---- checkpoint of the lowest collision rate ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["RQVAE", "LETTER"])
def test_the_weights_of_the_lowest_collision_rate_are_kept(name):
    """Checks at epochs 3, 6, 9 report collision rates 0.5, 0.1, 0.3: the codes are those of epoch 6."""
    vectors = _vectors(seed=1)
    params = {"num_levels": 2, "codebook_size": 8, "latent_dim": 4, "hidden_dims": [16], "epochs": 9,
              "batch_size": 64, "collision_check_interval": 3, "collision": "none", "lr": 0.01,
              "dead_code_reset": False}
    collaborative = None
    if name == "LETTER":
        params.update(n_clusters=2, collision_rounds=0)
        collaborative = _vectors(dim=4, seed=2)
    tokenizer = build_tokenizer(name, params)
    scripted, seen = iter([0.5, 0.1, 0.3]), []
    measured = tokenizer._collision_rate

    def collision_rate(fit_inputs):
        measured(fit_inputs)  # the real measurement runs too
        seen.append((tokenizer.network.encode_codes(fit_inputs)[0].clone(),
                     {k: v.clone() for k, v in tokenizer.network.state_dict().items()}))
        return next(scripted)

    tokenizer._collision_rate = collision_rate
    semantic_ids = tokenizer.fit(vectors, seed=3, collaborative=collaborative)
    report = semantic_ids.quality["fit_report"]
    assert report["collision_checks"] == [[3, 0.5], [6, 0.1], [9, 0.3]]
    assert report["kept_epoch"] == 6 and report["kept_collision_rate"] == 0.1
    codes_at_6, state_at_6 = seen[1]
    assert all(torch.equal(value, state_at_6[key]) for key, value in tokenizer.network.state_dict().items())
    assert not torch.equal(seen[2][1]["codebooks"], state_at_6["codebooks"])  # the final weights were different
    # nearest codes (LETTER: no Sinkhorn rounds), no collision policy: exactly the codes of epoch 6
    assert torch.equal(semantic_ids.codes[1:], codes_at_6)


def test_a_run_shorter_than_the_interval_is_checked_once_at_its_end():
    params = {"num_levels": 2, "codebook_size": 8, "latent_dim": 4, "hidden_dims": [16], "epochs": 4,
              "batch_size": 64, "collision_check_interval": 2000}
    report = build_tokenizer("RQVAE", params).fit(_vectors(), seed=3).quality["fit_report"]
    assert [epoch for epoch, _ in report["collision_checks"]] == [4] and report["kept_epoch"] == 4
    assert "collision_checks" not in build_tokenizer("RQVAE", {**params, "collision_check_interval": 0}).fit(
        _vectors(), seed=3).quality["fit_report"]


# ---- diversity groups and initialisation: size bounds ------------------------------------------------------------
def test_official_size_bounds():
    assert group_size_bounds(256, 10) == (10, 60)  # trainer.py constrained_km: min(256 // 20, 10), 10 * 6
    assert init_size_bounds(12101, 256) == (23, 92)  # vq.py init_emb: min(12101 // 512, 50), x 4
    assert init_size_bounds(300, 256) == (0, 2)  # official 0 / 0 cannot hold 300 items: ceil(300 / 256)
    lo, hi = group_size_bounds(32, 2)  # 6k = 12 < 16: widened
    assert (lo, hi) == (8, 16)


def test_diversity_groups_respect_min_and_max_sizes():
    """A codebook that plain k-means splits into far too large and too small groups: one dense blob of 200 codes
    and 56 codes spread far away."""
    rng = np.random.default_rng(0)
    codebook = np.vstack([rng.normal(scale=0.05, size=(200, 8)), rng.normal(scale=5.0, size=(56, 8))])
    codebook = codebook.astype(np.float32)
    plain = np.bincount(balanced_kmeans(codebook, 10, seed=0, size_max=256)[1], minlength=10)
    assert plain.max() > 60 or plain.min() < 10  # the constraint has work to do
    tokenizer = LETTERTokenizer(n_clusters=10)
    labels = tokenizer.code_groups(codebook, seed=0)
    sizes = np.bincount(labels, minlength=10)
    assert len(sizes) == 10 and sizes.min() >= 10 and sizes.max() <= 60 and sizes.sum() == 256


def test_fill_to_minimum_moves_the_cheapest_points_and_keeps_the_maximum():
    # 6 points, 3 clusters: all start in cluster 0; each other cluster needs 2.
    distances = np.array([[0, 1, 9], [0, 2, 9], [0, 9, 1], [0, 9, 3], [0, 5, 5], [0, 4, 4]], dtype=np.float32)
    assignments = fill_to_minimum(distances, np.zeros(6, dtype=np.int64), 2)
    assert np.bincount(assignments, minlength=3).tolist() == [2, 2, 2]
    assert assignments[[0, 1]].tolist() == [1, 1] and assignments[[2, 3]].tolist() == [2, 2]
    with pytest.raises(ValueError, match="cannot fill"):
        fill_to_minimum(distances, np.zeros(6, dtype=np.int64), 3)


# ---- the TIGER paper's RQ-VAE fit -----------------------------------------------------------------------------------
def test_rqvae_optimizer_choice():
    params = {"num_levels": 2, "codebook_size": 8, "latent_dim": 4, "hidden_dims": [16], "epochs": 3,
              "batch_size": 64, "optimizer": "adagrad", "lr": 0.4, "dead_code_reset": False}
    tokenizer = RQVAETokenizer(**params)
    report = tokenizer.fit(_vectors(), seed=0).quality["fit_report"]
    assert math.isfinite(report["final_loss"]) and report["dead_codes_reseeded"] == 0
    with pytest.raises(ValueError, match="adagrad"):
        RQVAETokenizer(**{**params, "optimizer": "lamb"})


def test_adagrad_starts_its_accumulator_as_tensorflow_so_the_first_step_is_not_plus_minus_lr():
    from recbole_genrec.tokenization.rqvae import google_adagrad

    weight = torch.nn.Parameter(torch.zeros(3))
    optimizer = google_adagrad([weight], lr=0.4)
    weight.grad = torch.tensor([1e-3, -1e-2, 0.0])
    optimizer.step()
    # TF / Keras / Optax: w -= lr * g / (sqrt(0.1 + g^2) + 1e-7); PyTorch's default would move each weight by 0.4
    expected = -0.4 * weight.grad / (torch.sqrt(0.1 + weight.grad ** 2) + 1e-7)
    assert torch.allclose(weight.detach(), expected) and weight.detach().abs().max() < 0.02


@pytest.mark.parametrize("optimizer, key, fresh", [("adagrad", "sum", 0.1), ("adamw", "exp_avg_sq", 0.0)])
def test_a_reseeded_code_restarts_its_optimizer_state(optimizer, key, fresh):
    tokenizer = RQVAETokenizer(optimizer=optimizer)
    codebooks = torch.nn.Parameter(torch.zeros(2, 4, 3))
    tokenizer.network = type("Net", (), {"codebooks": codebooks})()
    built = RQVAETokenizer.OPTIMIZERS[optimizer]([codebooks], lr=0.1)
    codebooks.grad = torch.ones_like(codebooks)
    built.step()
    before = built.state[codebooks][key].clone()
    tokenizer._clear_optimizer_state(built, [torch.tensor([1]), torch.tensor([], dtype=torch.long)])
    after = built.state[codebooks][key]
    assert torch.all(after[0, 1] == fresh) and torch.equal(after[0, [0, 2, 3]], before[0, [0, 2, 3]])
    assert torch.equal(after[1], before[1])
