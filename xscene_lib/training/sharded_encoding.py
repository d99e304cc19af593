"""Text encoding on several processes: each encodes a contiguous share of the batches, the parts merge.

`encode_in_shards` starts N processes with torchrun (`python -m xscene_lib.training.sharded_encoding JOB`), one GPU
each where there are GPUs. The texts the cache lacks are ordered as one process would batch them (longest
first); each process encodes a contiguous, equal share of them and writes its part atomically
(`text_cache.write_part`); `text_cache.merge_parts` adds the parts to the cache. The encoder's batches hold one
token count each at a fixed shape, so on one kind of device the merged cache holds the vectors a single
process would have written. `xscene encode --shards N` is the command-line form.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

import xscene_lib.training.distributed as distributed
from xscene_lib.data.validation import check_positive_int
from xscene_lib.training.distributed import DistributedError
from xscene_lib.text.encoder import TextEncoder
from xscene_lib.text.cache import merge_parts, text_hash, write_part


def encode_in_shards(encoder: TextEncoder, texts: Sequence[str], n_shards: int, *, timeout_s: float = 3_600) -> int:
    """Encode the texts the encoder's cache lacks on n_shards processes, merge them into the cache; return how many.

    The new texts are ordered as one process would batch them (longest first) and split into n_shards
    contiguous shares; a text's vector does not depend on its batchmates, so the merged cache holds the
    vectors a single process would write.
    """
    check_positive_int("encode_in_shards", "n_shards", n_shards)
    cache = encoder.vector_cache()
    distinct = {text_hash(text): text for text in texts}  # first-seen order, as encode() keeps it
    found, _ = cache.lookup(list(distinct))
    new = [(h, text) for (h, text), hit in zip(distinct.items(), found) if not hit]
    if not new:
        return 0
    if n_shards == 1:
        encoder.encode([text for _, text in new])  # this process, no launcher
        return len(new)
    order = encoder.encoding_order([text for _, text in new])
    shares = [distributed.share(len(new), rank, n_shards) for rank in range(n_shards)]
    folder = cache.folder.with_name(f".{cache.folder.name}.parts")
    shutil.rmtree(folder, ignore_errors=True)  # parts of an earlier, unfinished job
    folder.mkdir(parents=True)
    settings = {name: getattr(encoder, name) for name in ("pooling", "max_length", "batch_size", "normalize",
                                                          "device", "quantize", "num_threads")}
    job = {"encoder": {**settings, "model": str(encoder.model), "cache_dir": str(cache.folder.parent)},
           "shards": [[new[j][1] for j in order[part.start:part.stop]] for part in shares]}
    (folder / "job.json").write_text(json.dumps(job), encoding="utf-8")
    distributed.torchrun(["-m", "xscene_lib.training.sharded_encoding", str(folder / "job.json")], n_shards,
                         timeout_s=timeout_s)
    merge_parts(folder, n_shards, cache, [h for h, _ in new])
    shutil.rmtree(folder, ignore_errors=True)
    return len(new)


def encode_part(job_file: Path) -> None:
    """One process of `encode_in_shards` (started by torchrun): encode its share, write its part."""
    job = json.loads(Path(job_file).read_text(encoding="utf-8"))
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if world_size != len(job["shards"]):
        raise DistributedError(f"{world_size} processes were started for a job of {len(job['shards'])} shards "
                               f"(world size mismatch); start as many processes as shards")
    encoder = TextEncoder(**job["encoder"], cache=False, show_progress=False)
    if torch.cuda.is_available() and encoder.device == "auto" and not encoder.quantize:
        encoder.device = f"cuda:{int(os.environ['LOCAL_RANK']) % torch.cuda.device_count()}"  # one GPU each
    texts = job["shards"][rank]
    write_part(Path(job_file).parent, rank, world_size, encoder.vector_cache(), [text_hash(t) for t in texts],
               encoder.encode(texts))


if __name__ == "__main__":
    encode_part(Path(sys.argv[1]))
