"""Training: the one training loop (seeded, early stopping, checkpoints), training on several processes
under torchrun, and text encoding in shards. Imports xscene_lib.text and xscene_lib.data."""
from xscene_lib.training.distributed import (DistributedError, WorkerGroup, collective_failure, is_collective_failure,
                                             launched, setup, share, teardown, torchrun)
from xscene_lib.training.loop import TrainHistory, seeded_generator, train_module
from xscene_lib.training.sharded_encoding import encode_in_shards, encode_part

__all__ = ['DistributedError', 'TrainHistory', 'WorkerGroup', 'collective_failure', 'encode_in_shards',
           'encode_part', 'is_collective_failure', 'launched', 'seeded_generator', 'setup', 'share', 'teardown',
           'torchrun', 'train_module']
