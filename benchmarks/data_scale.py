"""Data pipeline at the scale of the real recipe: first start, cached start, and memory per rank / worker.

    python benchmarks/data_scale.py --records 665000 --num-proc 2          # one table row per run
    python benchmarks/data_scale.py --records 66500 --torchrun 2           # + 2 ranks starting together

Writes an N-record LLaVA JSON (llava_v1_5_mix665k-like: 1-4 rounds, questions of 8-40 words, answers
of 10-120 words, 3/4 of the records with an image; the images are 16 shared 336-px JPEGs) and a
word-level tokenizer over its vocabulary, then in fresh subprocesses:
  first start   ArrowSupervisedDataset built from scratch (map with --num-proc), seconds
  cached start  the same constructor again (cache hit), seconds
  memory        RSS / USS (private pages) of the main process after the cached start, and of each of 2
                DataLoader workers after iterating the whole dataset once (text only: --iterate-images
                also decodes and processes every image, which at 665K is hours on 2 cores)
With --torchrun K, K ranks (torch.distributed.run) construct the dataset on a cold cache at once:
one builds, the others wait on the cache lock and load; each reports its start time and RSS/USS.
Memory-mapped Arrow pages are file-backed and shared: they count in RSS but not in USS. A worker's
USS is what it privately dirtied after the fork (its real cost); the main process's USS is read
before any worker exists (after the fork its pages are shared with the workers and drop out of USS).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

NUM_IMAGE_TOKENS = 576  # CLIP-L/14 at 336 px, the LLaVA-1.5 recipe
MAX_LENGTH = 4096
WORDS = [f"w{i}" for i in range(3000)] + ["what", "is", "in", "the", "image", "?", "."]


def make_data(folder: Path, n: int, seed: int = 0) -> Path:
    from PIL import Image

    path = folder / "data.json"
    if path.exists() and (folder / "tokenizer").exists():
        return path  # written by an earlier run with this N
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(16):
        Image.new("RGB", (336, 336), (k * 15, 100, 200 - k * 10)).save(folder / f"img{k}.jpg", quality=90)
    rng = random.Random(seed)

    def text(lo, hi):
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) + " ."

    records = []
    for i in range(n):
        rounds = rng.randint(1, 4)
        conv = []
        for r in range(rounds):
            conv += [{"from": "human", "value": text(8, 40)}, {"from": "gpt", "value": text(10, 120)}]
        record = {"id": str(i), "conversations": conv}
        if rng.random() < 0.75:
            record["image"] = f"img{rng.randrange(16)}.jpg"
            conv[0]["value"] = "<image>\n" + conv[0]["value"]
        records.append(record)
    path = folder / "data.json"
    path.write_text(json.dumps(records))  # the same seed and N always give the same file (and cache key)
    tokenizer_dir = folder / "tokenizer"
    if not tokenizer_dir.exists():
        from gamma_mod.data.tokenizer import build_tokenizer

        build_tokenizer(WORDS).save_pretrained(tokenizer_dir)
    return path


def memory() -> tuple[float, float]:
    info = psutil.Process().memory_full_info()
    return info.rss / 2**20, info.uss / 2**20


def open_dataset(folder: Path, num_proc: int, tokenizer):
    from gamma_mod.data.arrow import ArrowSupervisedDataset
    from gamma_mod.data.templates import get_template
    from gamma_mod.model.vision import ImageProcessor

    return ArrowSupervisedDataset(folder / "data.json", folder, tokenizer, ImageProcessor(336, (0.5,) * 3, (0.5,) * 3),
                                  get_template("vicuna_v1"), NUM_IMAGE_TOKENS, MAX_LENGTH, num_proc=num_proc)


class TextOnly:
    """The dataset without image decoding (see the module docstring)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        import torch

        row = self.dataset.data[int(i)]
        return {"input_ids": torch.tensor(row["input_ids"]), "labels": torch.tensor(row["labels"])}


def _worker_memory(_):
    return os.getpid(), memory()


def child_start(folder: Path, num_proc: int, iterate: bool, iterate_images: bool) -> dict:
    import gamma_mod.data.arrow  # noqa: F401  (imports and the tokenizer are not the dataset's start-up cost)
    from gamma_mod.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(str(folder / "tokenizer"))
    before = memory()
    t0 = time.perf_counter()
    dataset = open_dataset(folder, num_proc, tokenizer)
    out = {"seconds": time.perf_counter() - t0, "cached": dataset.cached, "rows": len(dataset),
           "rss_before_mb": before[0], "uss_before_mb": before[1],
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    out["rss_mb"], out["uss_mb"] = memory()
    if iterate:
        import torch
        from torch.utils.data import DataLoader

        from gamma_mod.data.dataset import DataCollator

        source = dataset if iterate_images else TextOnly(dataset)
        loader = DataLoader(source, batch_size=64, num_workers=2, collate_fn=DataCollator(0),
                            persistent_workers=True)
        t0 = time.perf_counter()
        for _ in loader:
            pass
        out["epoch_seconds"] = time.perf_counter() - t0
        workers = [psutil.Process(w.pid) for w in loader._iterator._workers]
        out["workers"] = [{"rss_mb": w.memory_full_info().rss / 2**20, "uss_mb": w.memory_full_info().uss / 2**20}
                          for w in workers]
        out["main_after_epoch_rss_mb"], out["main_after_epoch_uss_mb"] = memory()
        del torch
    return out


def run_child(folder: Path, num_proc: int, iterate: bool, iterate_images: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", str(folder), "--num-proc", str(num_proc)]
    cmd += ["--iterate"] if iterate else []
    cmd += ["--iterate-images"] if iterate_images else []
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_torchrun(folder: Path, ranks: int, num_proc: int) -> list[dict]:
    shutil.rmtree(folder / ".gamma_mod_cache", ignore_errors=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", __file__,
           "--child", str(folder), "--num-proc", str(num_proc)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=66500)
    p.add_argument("--num-proc", type=int, default=1)
    p.add_argument("--folder", default="/tmp/gamma_mod_data_scale")
    p.add_argument("--no-iterate", action="store_true", help="skip the DataLoader epoch")
    p.add_argument("--iterate-images", action="store_true")
    p.add_argument("--torchrun", type=int, default=0, help="also start this many ranks together on a cold cache")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--iterate", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        result = child_start(Path(args.child), args.num_proc, args.iterate, args.iterate_images)
        result["rank"] = int(os.environ.get("RANK", 0))
        print(json.dumps(result), flush=True)
        return

    folder = Path(args.folder) / str(args.records)
    t0 = time.perf_counter()
    path = make_data(folder, args.records)
    print(f"wrote {args.records} records ({path.stat().st_size / 2**20:.0f} MB JSON) in "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    shutil.rmtree(folder / ".gamma_mod_cache", ignore_errors=True)
    # The 1-minute load average before and after each phase: on a shared machine it says what the times mean.
    load = {"before_first": os.getloadavg()[0]}
    first = run_child(folder, args.num_proc, False, False)
    load["after_first"] = os.getloadavg()[0]
    cached = run_child(folder, args.num_proc, not args.no_iterate, args.iterate_images)
    load["after_cached_and_epoch"] = os.getloadavg()[0]
    assert not first["cached"] and cached["cached"]
    row = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "records": args.records,
           "rows": cached["rows"], "num_proc": args.num_proc, "cpus": os.cpu_count(),
           "first_start_s": round(first["seconds"], 1), "first_peak_rss_mb": round(first["peak_rss_mb"]),
           "cached_start_s": round(cached["seconds"], 2),
           "main_rss_mb": round(cached["rss_mb"]),
           "main_uss_growth_mb": round(cached["uss_mb"] - cached["uss_before_mb"]),
           "main_rss_growth_mb": round(cached["rss_mb"] - cached["rss_before_mb"])}
    if "workers" in cached:
        row["epoch_s"] = round(cached["epoch_seconds"], 1)
        row["workers_rss_mb"] = [round(w["rss_mb"]) for w in cached["workers"]]
        row["workers_uss_mb"] = [round(w["uss_mb"]) for w in cached["workers"]]
        row["main_rss_after_epoch_mb"] = round(cached["main_after_epoch_rss_mb"])
    if args.torchrun:
        load["before_torchrun"] = os.getloadavg()[0]
        ranks = run_torchrun(folder, args.torchrun, args.num_proc)
        load["after_torchrun"] = os.getloadavg()[0]
        row["torchrun"] = [{"rank": r["rank"], "seconds": round(r["seconds"], 1), "cached": r["cached"],
                            "rss_mb": round(r["rss_mb"]), "rss_growth_mb": round(r["rss_mb"] - r["rss_before_mb"]),
                            "peak_rss_mb": round(r["peak_rss_mb"])}
                           for r in ranks]
    row["load_avg_1min"] = {k: round(v, 1) for k, v in load.items()}
    print(json.dumps(row))


if __name__ == "__main__":
    main()
