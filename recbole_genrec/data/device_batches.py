"""Training batches kept on the device: RecBole's TrainDataLoader without its per-batch collate.

RecBole builds every training batch on the CPU (`Dataset.__getitem__` -> feature join -> a new `Interaction`) and
then copies it to the device. For a sequential model trained without negative sampling, a batch is only rows of
four fields of the (prefix-augmented) training split, so `DeviceBatches` moves those fields to the device once and
yields `Interaction`s of index-selected rows. Order and batch size are RecBole's: the permutation is drawn from the
loader's own seeded generator with the same draws its `DataLoader` makes, so on one process a model sees exactly the
batches RecBole would give it (tests/test_benchmark.py checks SASRec bit for bit on the CPU). With several processes
(recbole_genrec/distributed.py) each one takes its shard from the loader's own DistributedSampler, as RecBole's
loader does.
"""
import math

import torch
from recbole.data.interaction import Interaction


class DeviceBatches:
    """`for interaction in DeviceBatches(train_data, device)` — the batches of RecBole's `train_data`.

    Carries the user id, the target item, the history and its length (what SASRec, TIGER and RPG read). Models that
    read other fields (joined item or user features, negative samples, RecBole's data transforms) need RecBole's
    loader: those configurations are refused here."""

    def __init__(self, train_data, device):
        dataset, config = train_data._dataset, train_data.config
        if train_data.neg_sample_args.get("distribution", "none") != "none":
            raise ValueError("device_batches: training with negative sampling needs RecBole's loader; set "
                             "device_batches: False (or train_neg_sample_args: ~ with loss_type: CE).")
        if config["transform"]:
            raise ValueError(f"device_batches: RecBole data transform '{config['transform']}' needs RecBole's "
                             f"loader; set device_batches: False.")
        fields = [dataset.uid_field, dataset.iid_field, dataset.iid_field + config["LIST_SUFFIX"],
                  config["ITEM_LIST_LENGTH_FIELD"]]
        inter = dataset.inter_feat
        missing = [field for field in fields if field not in inter]
        if missing:
            raise ValueError(f"device_batches: the training split has no field(s) {missing}; it serves sequential "
                             f"models. Set device_batches: False.")
        self.source = train_data
        self.device = torch.device(device)
        self.fields = {field: inter[field].to(self.device) for field in fields}
        self.num_rows = len(inter)
        self.batch_size = train_data.step
        self.shuffle = train_data.shuffle
        self.generator = train_data.generator
        self.sampler = None if config["single_spec"] else train_data.sampler  # this process's shard

    def __len__(self):
        rows = self.num_rows if self.sampler is None else len(self.sampler)
        return math.ceil(rows / self.batch_size)

    def set_epoch(self, epoch):
        """The epoch a shard is drawn for (DistributedSampler's seed is its seed + epoch, as in RecBole's loop)."""
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def order(self):
        """This epoch's row order, as RecBole's shuffling DataLoader draws it from the same generator."""
        if self.sampler is not None:
            return torch.tensor(list(self.sampler), dtype=torch.long, device=self.device)
        if not self.shuffle:
            return torch.arange(self.num_rows, device=self.device)
        # The draws torch's DataLoader makes per epoch: its iterator's base seed for workers, RandomSampler's
        # permutation, and one more permutation RandomSampler draws (and slices to nothing) when it runs out.
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        order = torch.randperm(self.num_rows, generator=self.generator)
        torch.randperm(self.num_rows, generator=self.generator)
        return order.to(self.device)

    def __iter__(self):
        order = self.order()
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            yield Interaction({field: values[rows] for field, values in self.fields.items()})
