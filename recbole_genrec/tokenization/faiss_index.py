"""Where the tokenizers' faiss work runs: a GPU index when faiss has GPU support (the `gpu` extra, faiss-gpu) and a
GPU is visible, the CPU index otherwise. The same algorithms either way (k-means and PQ training assign points with
whichever flat index they are given); GPU and CPU results agree within clustering noise (summation order).

Used by k-means and its nearest-centroid search (kmeans.py: RQ-VAE initialisation, RQ-KMeans, LETTER's and the
hierarchical trees' balanced k-means) and by OPQ's product-quantiser training (opq.py). RPG's item graph is built by
torch on the model's device (inference/graph_decoding.py) and needs no faiss."""
import functools

try:
    import faiss
except ImportError as error:  # faiss-cpu and faiss-gpu are extras: they install the same module, never both
    raise ImportError("faiss is not installed: pip install \"recbole_genrec[cpu]\" (faiss-cpu), or on a CUDA 12 GPU "
                      "host \"recbole_genrec[gpu]\" (faiss-gpu).") from error

# Below this many points a GPU index costs more than it saves (copies, kernel launches): LETTER re-clusters its
# 256-code codebooks every epoch, and PQ sub-quantisers train on a few thousand items.
GPU_MIN_POINTS = 4096
# faiss reserves 18% of the GPU's memory as scratch space by default; the model training beside it needs that.
GPU_SCRATCH_BYTES = 256 * 2**20


def gpu_available() -> bool:
    """faiss was built with GPU support and sees a GPU (faiss-cpu has `get_num_gpus`, returning 0)."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@functools.lru_cache(maxsize=None)
def _gpu_resources():
    """One pool of GPU scratch memory for the whole process (creating one per index costs a second each)."""
    resources = faiss.StandardGpuResources()
    resources.setTempMemory(GPU_SCRATCH_BYTES)
    return resources


def use_gpu(n_points: int, gpu: bool | None = None) -> bool:
    """gpu=None: the GPU when faiss has one and the problem is large enough; False: the CPU; True: the GPU when
    faiss has one (else the CPU)."""
    if gpu is None:
        return n_points >= GPU_MIN_POINTS and gpu_available()
    return bool(gpu) and gpu_available()


def flat_l2(d: int, n_points: int, gpu: bool | None = None):
    """An exact L2 index of dimension d for assigning `n_points` points: GpuIndexFlatL2 or IndexFlatL2."""
    if use_gpu(n_points, gpu):
        return faiss.GpuIndexFlatL2(_gpu_resources(), int(d))
    return faiss.IndexFlatL2(int(d))
