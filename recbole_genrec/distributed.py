"""Beyond one process: PyTorch DDP training and evaluation for every model (the plugin's and RecBole's).

Three launchers, one code path (every process runs `quick_start.run_recbole_genrec`):
- `--nproc=N` (RecBole's own keys `nproc`, `world_size`, `ip`, `port`, `offset`, as `recbole.quick_start.run`):
  `spawn` starts N processes on this machine. Several machines: the same command on each, with `world_size` = all
  processes, `offset` = global rank of this machine's first process, and `ip`/`port` of the first machine.
- `torchrun --nproc_per_node=N run_recbole_genrec.py ...`: the process group comes from torchrun's environment.
- Ray Train's TorchTrainer (tuning.py, `--gpus_per_trial` > 1): Ray has already initialised the process group.
The backend is NCCL on GPUs and gloo on a CPU (RecBole 1.2.1 itself only knows NCCL).

What scales and what stays on rank 0:
- data and tokenizer: rank 0 loads the dataset and fits the tokenizer first (`rank_zero_first`), the other ranks
  wait at a barrier and then read its caches (text embeddings, semantic IDs) instead of fitting again;
- training: RecBole's loader shards every epoch's rows (its DistributedSampler, batch size divided by the number of
  processes; `device_batches` uses the same sampler), DDP averages the gradients;
- evaluation: the users are sharded the same way; each rank ranks its users, the per-user rows the metrics read
  (`rec.topk`, the top-K lists `rec.items`, ...) are gathered onto every rank in dataset order (the sampler's
  padding dropped), and RecBole's metric classes score all users once; every rank gets the same numbers, so early
  stopping agrees;
- checkpoints, result files and logs: global rank 0 only (on several machines too: RecBole's `_save_checkpoint`
  writes on every machine's local rank 0); the best weights reach the other ranks by broadcast, not by reading
  the file (`broadcast_state`); the other ranks log errors only.
"""
import contextlib
import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist

# Rank 0 fits the tokenizer while the other ranks wait at a barrier: give it hours, not the default 30 minutes.
PROCESS_GROUP_TIMEOUT = timedelta(hours=6)
# Per-user rows of RecBole's evaluation structure (Collector.get_data_struct): gathered across ranks.
USER_ROW_KEYS = ("rec.topk", "rec.items", "rec.score", "rec.meanrank", "data.label")
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


# ---- launching ----------------------------------------------------------------------------------------------------
# True inside `rank_zero_first`: a rank works by itself there, so what it builds (a collaborative model trained for
# a tokenizer, with its own config and trainer) is single-process and takes no part in collective calls.
_alone = False


def active():
    """True in a process of a multi-process group (outside the work one rank does by itself)."""
    return not _alone and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank():
    return dist.get_rank() if active() else 0


def world_size():
    return dist.get_world_size() if active() else 1


def is_main_process():
    """Rank 0, or the only process: the one that writes result files and prints tables."""
    return rank() == 0


def launched_externally():
    """torchrun's environment, or a process group someone else (Ray Train) initialised."""
    return (dist.is_available() and dist.is_initialized()) or all(v in os.environ for v in TORCHRUN_VARIABLES)


def spawn_needed(config):
    """`nproc` > 1 (or a `world_size`) asked for, in a process that is not already one of the group."""
    if not config["single_spec"] or launched_externally():
        return False
    return int(config["nproc"] or 1) > 1 or int(config["world_size"] or -1) > 0


def spawn(function, config, kwargs):
    """Run `function(**kwargs)` in `nproc` new processes (ranks offset .. offset + nproc - 1 of `world_size`), as
    RecBole's `run` does; returns what rank 0 returned (None on a machine without rank 0)."""
    import torch.multiprocessing as mp

    nproc = int(config["nproc"] or 1)
    size = int(config["world_size"] or -1)
    size = nproc if size <= 0 else size
    offset = int(config["offset"] or 0)
    ip, port = config["ip"] or "localhost", config["port"]
    if size > nproc and (not config["ip"] or not port):
        raise ValueError(f"world_size={size} spans several machines (nproc={nproc} here): set ip and port to the "
                         f"address of the machine that runs rank 0 (--ip=HOST --port=PORT) and offset to the global "
                         f"rank of this machine's first process.")
    if offset + nproc > size:
        raise ValueError(f"offset={offset} + nproc={nproc} exceeds world_size={size}: ranks run from 0 to "
                         f"world_size - 1.")
    gpus = gpu_list(config["gpu_id"])
    if torch.cuda.is_available() and gpus and len(gpus.split(",")) < nproc:
        raise ValueError(f"nproc={nproc} processes need one GPU each, but gpu_id='{gpus}' lists "
                         f"{len(gpus.split(','))}: set --gpu_id=0,1,... (or --gpu_id= for CPU processes).")
    port = port or free_port()
    kwargs = dict(kwargs)
    kwargs["config_dict"] = {**(kwargs.get("config_dict") or {}), "nproc": nproc, "world_size": size,
                             "offset": offset, "ip": ip, "port": port}
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_spawned_process, args=(function, kwargs, queue), nprocs=nproc, join=True)
    return None if queue.empty() else queue.get()


def _spawned_process(local_rank, function, kwargs, queue):
    kwargs["config_dict"] = {**kwargs["config_dict"], "local_rank": local_rank}
    try:
        result = function(**kwargs)
        if rank() == 0:
            queue.put(result)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def gpu_list(gpu_id):
    """RecBole's `gpu_id` (a string, an int or a list) as CUDA_VISIBLE_DEVICES reads it."""
    return ",".join(map(str, gpu_id)) if isinstance(gpu_id, (tuple, list)) else str(gpu_id)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---- one process of the group: RecBole's Config._init_device -------------------------------------------------------
def init_device(config_dict):
    """Join (or start) the process group when this process is one of several, and set what RecBole's Config sets
    for a distributed run: `local_rank`, `single_spec` False, `device`, quiet logging on ranks other than 0.
    Returns False for a single-process run (RecBole's own `_init_device` then runs)."""
    if _alone:
        return False
    external = launched_externally()
    spawned = config_dict.get("local_rank") is not None and (config_dict.get("world_size") or -1) > 0
    if not (external or spawned):
        return False
    cuda = torch.cuda.is_available() and str(config_dict.get("gpu_id", "0")) != ""
    # Spawned (`local_rank` in the config, also for a later config of the same process); torchrun / Ray: theirs.
    local_rank = int(config_dict["local_rank"] if spawned else os.environ.get("LOCAL_RANK", 0))
    if not external:  # spawned, first config: RecBole's semantics, `gpu_id` lists this machine's GPUs
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_list(config_dict.get("gpu_id", "0"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if cuda else "gloo"
        if external:
            dist.init_process_group(backend, timeout=PROCESS_GROUP_TIMEOUT)
        else:
            dist.init_process_group(backend, init_method=f"tcp://{config_dict['ip']}:{config_dict['port']}",
                                    rank=local_rank + int(config_dict.get("offset") or 0),
                                    world_size=int(config_dict["world_size"]), timeout=PROCESS_GROUP_TIMEOUT)
    _patch_recbole_ddp_wrap()
    config_dict.update(local_rank=local_rank, world_size=dist.get_world_size(), single_spec=False, device=device)
    config_dict.setdefault("nproc", int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size())))
    if dist.get_rank() != 0:  # as RecBole's Config: one process logs, shows progress and writes
        config_dict.update(state="error", show_progress=False, verbose=False)
    return True


def single_process(config):
    """A configuration saved by a distributed run, made fit for one process (reloading its checkpoint)."""
    if config["single_spec"] or active():
        return config
    config.final_config_dict.update(single_spec=True, local_rank=0, world_size=-1, nproc=1,
                                    device=torch.device("cuda" if torch.cuda.is_available()
                                                        and config["device"].type == "cuda" else "cpu"))
    return config


def _patch_recbole_ddp_wrap():
    """RecBole 1.2.1's trainer wraps the model with `device_ids=[local_rank]` and SyncBatchNorm, which DDP refuses
    for a CPU module (gloo) and SyncBatchNorm cannot run on a CPU: wrap as DDP documents for each device."""
    from recbole.trainer.trainer import AbstractTrainer
    from torch.nn.parallel import DistributedDataParallel

    if getattr(AbstractTrainer.__init__, "genrec_ddp", False):
        return

    def __init__(self, config, model):
        self.config, self.model = config, model
        if not config["single_spec"]:
            cuda = config["device"].type == "cuda"
            if cuda:
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            self.distributed_model = DistributedDataParallel(
                self.model, device_ids=[config["device"].index] if cuda else None)

    __init__.genrec_ddp = True
    AbstractTrainer.__init__ = __init__


# ---- collective steps ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def rank_zero_first():
    """Rank 0 runs the block first (loads the data, fits and caches the tokenizer); the others wait, then run it
    and read the caches rank 0 wrote."""
    global _alone
    group, first = active(), rank() == 0
    if group and not first:
        dist.barrier()
    _alone = group
    try:
        yield
    finally:
        _alone = False
    if group and first:
        dist.barrier()


def barrier():
    if active():
        dist.barrier()


def from_rank_zero(value):
    """Rank 0's `value` on every rank (a checkpoint name, a time-budget decision): ranks must take the same branch."""
    if not active():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def broadcast_state(module):
    """Rank 0's parameters and buffers copied into `module` on every rank (in place): the best checkpoint reaches
    the other ranks without their reading rank 0's file, which another machine's disk does not have."""
    if not active():
        return
    for tensor in module.state_dict().values():  # detached views of the module's own storage
        dist.broadcast(tensor, src=0)


def _device():
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def gather_user_rows(tensor, n_users):
    """Each rank's rows of the users its DistributedSampler gave it (rank r: users r, r + world, ..., the last one
    possibly a padding repeat) -> all `n_users` rows in dataset order, on every rank."""
    if not active():
        return tensor
    dtype = tensor.dtype
    local = tensor.to(_device(), torch.uint8 if dtype == torch.bool else None)
    parts = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(parts, local)
    # parts[r][i] is the user at position r + i * world: interleave, then drop the sampler's padding at the end.
    rows = torch.stack(parts, dim=1).flatten(0, 1)[:n_users]
    return rows.to(tensor.device, dtype)


def gather_eval_struct(data_struct, n_users):
    """RecBole's evaluation structure with every per-user entry gathered over all ranks (`gather_user_rows`); the
    rest (item counts from the training split, model details) is the same on every rank."""
    if active():
        for key in USER_ROW_KEYS:
            if key in data_struct:
                data_struct.set(key, gather_user_rows(data_struct.get(key), n_users))
    return data_struct


def any_rank(mask):
    """Element-wise OR of a bool tensor over all ranks."""
    if not active():
        return mask
    flags = mask.to(_device(), torch.uint8)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags.to(mask.device).bool()


def per_rank(number):
    """[number of rank 0, number of rank 1, ...] on every rank."""
    if not active():
        return [number]
    numbers = [None] * world_size()
    dist.all_gather_object(numbers, number)
    return numbers


def shard_size(n, shard, shards):
    """How many real (non-padding) rows DistributedSampler gives rank `shard` of `shards` from n rows."""
    return len(range(shard, n, shards))
