"""TIGER's RQ-VAE tokenizer (Rajput et al., NeurIPS 2023).

MLP encoder in -> 512 -> 256 -> 128 -> 32 (ReLU), residual quantisation with L codebooks of K codes, mirrored
decoder. Level l picks the code nearest to the current residual; the quantised latent is the sum of the chosen
codes and reaches the decoder through a straight-through estimator. Loss = reconstruction MSE + sum over levels
of ||sg[r_l] - e_l||^2 + beta * ||r_l - sg[e_l]||^2. Against collapse: standardised inputs, codebooks
initialised by k-means on each level's residuals, and dead codes re-seeded with current residuals.

Recipe switches (tokenizer parameters): `detach_residuals` (False: r_{l+1} = r_l - sg[e_l], so the commitment of
every level trains the encoder, the paper's loss as written; True: r_{l+1} = sg[r_l - e_l], so only level 0's
does, as LETTER's official rq.py/vq.py, whose residual is built from the straight-through output);
`optimizer` (adamw | adagrad, the TIGER paper's, with TensorFlow's accumulator start: `google_adagrad`);
`dead_code_reset`; `collision_check_interval` (keep the weights of the check with the lowest collision rate, as
LETTER's official trainer, instead of the final ones)."""
import copy
import logging
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recbole_genrec.progress import progress
from recbole_genrec.tokenization.base import Tokenizer, standardization_stats
from recbole_genrec.tokenization.kmeans import kmeans

logger = logging.getLogger("recbole_genrec")

KMEANS_INIT_NITER = 25
ENCODE_BATCH_SIZE = 65536


def google_adagrad(params, lr, weight_decay=0.0):
    """Adagrad as TensorFlow, Keras and Optax define it (the TIGER paper's code is Google's): the squared-gradient
    accumulator starts at 0.1 and epsilon is 1e-7. PyTorch's starts at 0, which makes the first step +-lr on every
    weight: at the paper's lr 0.4 that blows the RQ-VAE up (first-epoch reconstruction loss 1.6e8 on 3,000
    amazon-beauty items) and collapses every codebook to one code (BENCHMARKS.md, "Semantic-ID tokenizers")."""
    return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay, initial_accumulator_value=0.1, eps=1e-7)


def _mlp(dims, dropout):
    layers = []
    for index, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(in_dim, out_dim))
        if index < len(dims) - 2:  # no activation on the output layer
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def squared_distances(points: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """[n, K] squared Euclidean distances between points [n, D] and codes [K, D]."""
    return (
        points.pow(2).sum(1, keepdim=True) - 2.0 * points @ codebook.T + codebook.pow(2).sum(1)[None, :]
    ).clamp_min(0.0)


class ResidualQuantizedVAE(nn.Module):
    def __init__(self, input_dim, hidden_dims, latent_dim, num_levels, codebook_size, beta=0.25, dropout=0.0,
                 detach_residuals=False):
        super().__init__()
        self.beta = beta
        self.detach_residuals = detach_residuals
        self.encoder = _mlp([input_dim, *hidden_dims, latent_dim], dropout)
        self.decoder = _mlp([latent_dim, *reversed(hidden_dims), input_dim], dropout)
        # Overwritten by k-means initialisation when enabled; otherwise a small uniform init (as LETTER's code).
        self.codebooks = nn.Parameter(
            torch.empty(num_levels, codebook_size, latent_dim).uniform_(-1.0 / codebook_size, 1.0 / codebook_size)
        )

    @property
    def num_levels(self):
        return self.codebooks.shape[0]

    def assign_codes(self, level, residual):
        """Codes of `residual` [n, D] at `level`: the nearest code. LETTER balances its last level in training."""
        return squared_distances(residual, self.codebooks[level]).argmin(1)

    def level_loss(self, level, residual, chosen, codes):
        """||sg[r] - e||^2 (moves the codes) + beta * ||r - sg[e]||^2 (commitment), summed over levels (TIGER)."""
        return F.mse_loss(chosen, residual.detach()) + self.beta * F.mse_loss(residual, chosen.detach())

    def quantize(self, latent):
        """(quantised latent [n, D] = sum of chosen codes, codes [n, L], quantisation loss)."""
        residual = latent
        quantized = torch.zeros_like(latent)
        quantization_loss = latent.new_zeros(())
        codes = []
        for level in range(self.num_levels):
            with torch.no_grad():
                level_codes = self.assign_codes(level, residual)
            chosen = self.codebooks[level][level_codes]
            quantization_loss = quantization_loss + self.level_loss(level, residual, chosen, level_codes)
            quantized = quantized + chosen
            if self.detach_residuals:
                # LETTER's rq.py: residual - (residual + sg[e - residual]) has the value r - e and no gradient, so
                # the losses of levels >= 1 reach their own codebook only, never the encoder.
                residual = (residual - chosen).detach()
            else:
                residual = residual - chosen.detach()
            codes.append(level_codes)
        return quantized, torch.stack(codes, 1), quantization_loss

    def loss(self, inputs):
        """(total loss, reconstruction loss, quantised latent with the straight-through gradient) of a batch of
        standardised inputs."""
        latent = self.encoder(inputs)
        quantized, _, quantization_loss = self.quantize(latent)
        # Straight-through: the decoder sees the quantised latent, the encoder receives the decoder's gradient.
        straight_through = latent + (quantized - latent).detach()
        reconstruction_loss = F.mse_loss(self.decoder(straight_through), inputs)
        return reconstruction_loss + quantization_loss, reconstruction_loss, straight_through

    @torch.no_grad()
    def level_residuals(self, inputs):
        """Per level, the residuals that level quantises, and the codes it picks: ([L x [n, D]], [L x [n]])."""
        residual = self.encoder(inputs)
        residuals, codes = [], []
        for level in range(self.num_levels):
            level_codes = squared_distances(residual, self.codebooks[level]).argmin(1)
            residuals.append(residual)
            codes.append(level_codes)
            residual = residual - self.codebooks[level][level_codes]
        return residuals, codes

    @torch.no_grad()
    def encode_codes(self, inputs, with_last_level_distances=False):
        """(codes [n, L], squared distances of the last-level residual to every last-level code [n, K] or None)."""
        residuals, codes = self.level_residuals(inputs)
        distances = squared_distances(residuals[-1], self.codebooks[-1]) if with_last_level_distances else None
        return torch.stack(codes, 1), distances

    @torch.no_grad()
    def initialize_codebooks_by_kmeans(self, inputs, seed, cluster=kmeans):
        """Level by level, k-means on that level's residuals of `inputs` under the untrained encoder.
        `cluster(points, k, niter=, seed=) -> (centroids, assignments)`: faiss k-means by default, LETTER passes
        its size-constrained k-means."""
        residual = self.encoder(inputs)
        codebook_size = self.codebooks.shape[1]
        generator = torch.Generator().manual_seed(seed)
        for level in range(self.num_levels):
            centroids, _ = cluster(residual.cpu().numpy(), codebook_size, niter=KMEANS_INIT_NITER, seed=seed + level)
            _, first = np.unique(centroids, axis=0, return_index=True)  # balanced k-means repeats centroids when
            codebook = torch.from_numpy(centroids[np.sort(first)]).to(residual)  # points are fewer than codes
            if len(codebook) < codebook_size:  # fewer distinct residuals than codes: the rest start on random items
                extra = torch.randint(len(residual), (codebook_size - len(codebook),), generator=generator)
                codebook = torch.cat([codebook, residual[extra.to(residual.device)]])
            self.codebooks.data[level] = codebook
            residual = residual - codebook[squared_distances(residual, codebook).argmin(1)]

    @torch.no_grad()
    def reset_dead_codes(self, inputs, generator):
        """Re-seed every code that no input uses with a random current residual of its level.
        Returns the indices of the re-seeded codes, per level."""
        residuals, codes = self.level_residuals(inputs)
        codebook_size = self.codebooks.shape[1]
        dead_per_level = []
        for level in range(self.num_levels):
            usage = torch.bincount(codes[level], minlength=codebook_size)
            dead = torch.nonzero(usage == 0).flatten()
            if len(dead):
                n_points = len(residuals[level])
                if len(dead) <= n_points:  # distinct items, so re-seeded codes do not duplicate each other
                    picks = torch.randperm(n_points, generator=generator)[: len(dead)]
                else:
                    picks = torch.randint(n_points, (len(dead),), generator=generator)
                self.codebooks.data[level, dead] = residuals[level][picks.to(dead.device)]
            dead_per_level.append(dead)
        return dead_per_level


class RQVAETokenizer(Tokenizer):
    name = "RQVAE"
    revision = 2  # 2: adagrad as TensorFlow's (accumulator from 0.1); LETTER inherits it (2: batched collision pass)
    default_params = {
        "num_levels": 3,
        "codebook_size": 256,
        "latent_dim": 32,
        "hidden_dims": (512, 256, 128),
        "beta": 0.25,
        "epochs": 3000,
        "batch_size": 1024,
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "dropout": 0.0,
        "standardize": True,
        "kmeans_init": True,
        "dead_code_reset": True,
        "dead_code_interval": 100,  # epochs between re-seeding; never in the last interval, so codes settle
        "optimizer": "adamw",  # adamw | adagrad (the TIGER paper: Adagrad, lr 0.4)
        "detach_residuals": False,  # True: only level 0's commitment trains the encoder (LETTER's rq.py)
        "collision_check_interval": 0,  # > 0: every that many epochs measure the collision rate of the fit
        # items' codes and keep the weights of the lowest (LETTER's trainer); 0: keep the final weights
    }
    OPTIMIZERS = {"adamw": torch.optim.AdamW, "adagrad": google_adagrad}

    def __init__(self, **params):
        super().__init__(**params)
        self.network = None
        self.mean = self.std = None
        self.device = self._resolve_device(str(self.params["device"]))
        if str(self.params["optimizer"]).lower() not in self.OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {self.params['optimizer']!r} for tokenizer {self.name}: choose one "
                             f"of {', '.join(self.OPTIMIZERS)}.")

    @staticmethod
    def _resolve_device(name):
        if name.startswith("cuda") and not torch.cuda.is_available():
            logger.info(f"RQVAE: device '{name}' requested but CUDA is not available; fitting on the CPU")
            return torch.device("cpu")
        return torch.device(name)

    def _standardize(self, vectors):
        if isinstance(vectors, torch.Tensor):
            vectors = vectors.detach().cpu().numpy()
        vectors = np.asarray(vectors, dtype=np.float32)
        return torch.from_numpy((vectors - self.mean) / self.std).to(self.device)

    def _fit_codes(self, vectors, fit_mask, seed):
        params = self.params
        if params["standardize"]:
            self.mean, self.std = standardization_stats(vectors, fit_mask)
        else:
            self.mean = np.zeros(vectors.shape[1], dtype=np.float32)
            self.std = np.ones(vectors.shape[1], dtype=np.float32)
        inputs = self._standardize(vectors)
        self.fit_items = torch.from_numpy(np.flatnonzero(fit_mask)).to(self.device)  # item row of each fit input
        fit_inputs = inputs[self.fit_items]
        self.network = self._build_network(vectors.shape[1]).to(self.device)
        if params["kmeans_init"]:
            self.network.eval()
            self.network.initialize_codebooks_by_kmeans(fit_inputs, seed, cluster=self._init_cluster)
        self._train(fit_inputs, seed)
        self.network.eval()
        codes, distances = self._encode(inputs, with_last_level_distances=self.needs_last_level_distances)
        if distances is not None:
            self.last_level_distances = distances.cpu().numpy()
        return codes

    def _build_network(self, input_dim):
        params = self.params
        return ResidualQuantizedVAE(
            input_dim=input_dim,
            hidden_dims=[int(dim) for dim in params["hidden_dims"]],
            latent_dim=int(params["latent_dim"]),
            num_levels=int(params["num_levels"]),
            codebook_size=int(params["codebook_size"]),
            beta=float(params["beta"]),
            dropout=float(params["dropout"]),
            detach_residuals=bool(params["detach_residuals"]),
        )

    def _init_cluster(self, points, k, niter, seed):
        """The k-means that initialises each level's codebook (LETTER: size-constrained)."""
        return kmeans(points, k, niter=niter, seed=seed)

    def _batch_loss(self, batch_inputs, batch_index):
        """(loss, reconstruction loss) of one batch; `batch_index` [b] are positions in the fit inputs."""
        loss, reconstruction_loss, _ = self.network.loss(batch_inputs)
        return loss, reconstruction_loss

    def _on_epoch_start(self, epoch, seed):
        """Hook before every epoch (LETTER re-clusters its codebooks here)."""

    def _train(self, fit_inputs, seed):
        params = self.params
        epochs, lr = int(params["epochs"]), float(params["lr"])
        batch_size = min(int(params["batch_size"]), len(fit_inputs))
        reset_interval = int(params["dead_code_interval"])
        optimizer = self.OPTIMIZERS[str(params["optimizer"]).lower()](
            self.network.parameters(), lr=lr, weight_decay=float(params["weight_decay"]))
        # As LETTER's trainer: eval_step = min(interval, epochs), so a short run is checked once, at its end.
        check_interval = min(int(params["collision_check_interval"]), epochs)
        checks, best = [], None  # [(epoch, collision rate)], (rate, epoch, state) of the lowest so far
        generator = torch.Generator().manual_seed(seed)
        n_batches = math.ceil(len(fit_inputs) / batch_size)
        n_reseeded = 0
        start = time.time()
        epoch_loss = epoch_reconstruction = first_loss = first_reconstruction = float("nan")
        epoch_progress = progress(range(epochs), desc="RQ-VAE epochs", leave=False)
        for epoch in epoch_progress:
            self.network.train()
            self._on_epoch_start(epoch, seed)
            order = (torch.randperm(len(fit_inputs), generator=generator) if n_batches > 1
                     else torch.arange(len(fit_inputs))).to(self.device)
            loss_sum = fit_inputs.new_zeros(())
            reconstruction_sum = fit_inputs.new_zeros(())
            for batch_start in range(0, len(fit_inputs), batch_size):
                batch_index = order[batch_start : batch_start + batch_size]
                loss, reconstruction_loss = self._batch_loss(fit_inputs[batch_index], batch_index)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach()
                reconstruction_sum += reconstruction_loss.detach()
            epoch_loss = loss_sum.item() / n_batches  # one sync per epoch
            first_loss = epoch_loss if epoch == 0 else first_loss
            epoch_reconstruction = reconstruction_sum.item() / n_batches
            first_reconstruction = epoch_reconstruction if epoch == 0 else first_reconstruction
            if not math.isfinite(epoch_loss):
                raise RuntimeError(
                    f"RQ-VAE loss is {epoch_loss} at epoch {epoch + 1}/{epochs}. Lower the tokenizer lr "
                    f"(now {lr:g}), or check the item vectors for extreme values."
                )
            epoch_progress.set_postfix(loss=f"{epoch_loss:.4f}", refresh=False)
            reset_due = (epoch + 1) % reset_interval == 0 and epoch + 1 + reset_interval <= epochs
            if params["dead_code_reset"] and reset_due:
                dead_per_level = self.network.reset_dead_codes(fit_inputs, generator)
                self._clear_optimizer_state(optimizer, dead_per_level)
                n_reseeded += sum(len(dead) for dead in dead_per_level)
            if check_interval > 0 and (epoch + 1) % check_interval == 0:
                rate = self._collision_rate(fit_inputs)
                checks.append((epoch + 1, rate))
                if best is None or rate < best[0]:  # strictly lower, as the official trainer: the earliest wins
                    best = (rate, epoch + 1, copy.deepcopy(self.network.state_dict()))
        epoch_progress.close()
        if best is not None:
            self.network.load_state_dict(best[2])
        kept = f", weights of epoch {best[1]} kept (collision rate {best[0]:.4f})" if best is not None else ""
        logger.info(
            f"RQ-VAE: {epochs} epochs on {len(fit_inputs)} items in {time.time() - start:.1f}s, final loss "
            f"{epoch_loss:.4f} (reconstruction {epoch_reconstruction:.4f}), {n_reseeded} dead codes re-seeded{kept}"
        )
        self.fit_report = {
            "epochs": epochs,
            "first_epoch_loss": float(first_loss),
            "first_epoch_reconstruction_loss": float(first_reconstruction),
            "final_loss": float(epoch_loss),
            "final_reconstruction_loss": float(epoch_reconstruction),
            "dead_codes_reseeded": int(n_reseeded),
        }
        if best is not None:
            self.fit_report.update(collision_checks=[[e, float(r)] for e, r in checks], kept_epoch=int(best[1]),
                                   kept_collision_rate=float(best[0]))

    @torch.no_grad()
    def _collision_rate(self, fit_inputs):
        """Share of fit items whose nearest-code ID another fit item also has, (n - distinct IDs) / n, as LETTER's
        trainer measures it (eval mode, no Sinkhorn, no collision policy)."""
        was_training = self.network.training
        self.network.eval()
        codes = torch.cat([self.network.encode_codes(fit_inputs[start : start + ENCODE_BATCH_SIZE])[0]
                           for start in range(0, len(fit_inputs), ENCODE_BATCH_SIZE)])
        self.network.train(was_training)
        return (len(codes) - len(torch.unique(codes, dim=0))) / len(codes)

    def _clear_optimizer_state(self, optimizer, dead_per_level):
        """Re-seeded codes start without the momentum of the dead code they replace (Adagrad's accumulator at
        its initial value)."""
        state = optimizer.state.get(self.network.codebooks, {})
        fresh = {"exp_avg": 0.0, "exp_avg_sq": 0.0,  # AdamW's moments
                 "sum": optimizer.param_groups[0].get("initial_accumulator_value", 0.0)}  # Adagrad's accumulator
        for level, dead in enumerate(dead_per_level):
            for key, value in fresh.items():
                if key in state and len(dead):
                    state[key][level, dead] = value

    @torch.no_grad()
    def _encode(self, inputs, with_last_level_distances=False):
        codes, distances = [], []
        for start in range(0, len(inputs), ENCODE_BATCH_SIZE):
            batch_codes, batch_distances = self.network.encode_codes(
                inputs[start : start + ENCODE_BATCH_SIZE], with_last_level_distances
            )
            codes.append(batch_codes.cpu())
            distances.append(batch_distances)
        return torch.cat(codes), (torch.cat(distances) if with_last_level_distances else None)

    def encode_codes(self, vectors) -> torch.Tensor:
        """Codes [n, L] (long, CPU) of raw item vectors [n, d] under the trained RQ-VAE (no collision policy)."""
        if self.network is None:
            raise RuntimeError("RQVAE.encode_codes needs a fitted tokenizer: call fit() first")
        self.network.eval()
        return self._encode(self._standardize(vectors))[0]
