"""The suspects task's near search, mirrors included (374cad3 on), rerun on all of CIFAR-10 without
training: the source of suspects/*_mirrored.csv and of the mirrored counts in docs/results.md.

    python results/cifar10-suspects-cpu/search_with_mirrors.py OUTDIR          # from the project root
    python results/cifar10-suspects-cpu/search_with_mirrors.py OUTDIR train    # the training set alone

It also prints its memory (Linux, /proc/self/status, MiB): the resident size once the data is
loaded, then the peak from there to the end of the search (the peak is reset after loading by
/proc/self/clear_refs, so the loading's own peak is not in it). The search's own memory is that peak
less the resident size after loading, which holds the data. `train` searches the training set alone
and writes duplicates_mirrored.csv only.
"""
import sys, time
from pathlib import Path
import numpy as np, pandas as pd, torch
torch.set_num_threads(1)
from harness.datasets import load_dataset
from harness.near_duplicates import find_duplicates


def status(field):
    """A /proc/self/status field (VmRSS, VmHWM) in MiB."""
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field + ":"))
    return int(line.split()[1]) / 1024


train_only = sys.argv[2:] == ["train"]
t = time.time()
ds = load_dataset("imagefolder:/work/shared/data/cifar10", subset=50000)
print("loaded", len(ds.x_train), len(ds.x_test), round(time.time() - t), flush=True)
data_mib = sum(a.numel() * a.element_size() for a in (ds.x_train, ds.x_test, ds.y_train, ds.y_test)) / 2**20
print(f"memory after loading: resident {status('VmRSS'):.0f} MiB, peak while loading {status('VmHWM'):.0f} MiB, "
      f"the data's tensors {data_mib:.0f} MiB", flush=True)
Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) restarts from the resident size
base = status("VmRSS")
pairs, copies = find_duplicates(ds.x_train, None if train_only else ds.x_test)
peak = status("VmHWM")
print("searched", round(time.time() - t), flush=True)
print(f"memory of the search ({'training set' if train_only else 'training set and test split'}): peak {peak:.0f} MiB, "
      f"{peak - base:.0f} MiB over the {base:.0f} MiB resident after loading", flush=True)
names = np.array(ds.classes)
ytr, yte = ds.y_train.numpy(), ds.y_test.numpy()
p = pairs.assign(label_a=ytr[pairs.a], label_a_name=names[ytr[pairs.a]], label_b=ytr[pairs.b],
                 label_b_name=names[ytr[pairs.b]])
p["labels_differ"] = p.label_a != p.label_b
p["file_a"] = [ds.sample_names[i] for i in p.a]; p["file_b"] = [ds.sample_names[i] for i in p.b]
p.sort_values(["labels_differ", "distance"], ascending=[False, True]).to_csv(sys.argv[1] + "/duplicates_mirrored.csv", index=False)
print("pairs", len(p), "mirrored", int(p.mirrored.sum()), "differ", int(p.labels_differ.sum()), flush=True)
if not train_only:
    c = copies.assign(label_test=yte[copies.test], label_test_name=names[yte[copies.test]], label_train=ytr[copies.train],
                      label_train_name=names[ytr[copies.train]])
    c["labels_differ"] = c.label_test != c.label_train
    c["file_test"] = [ds.test_sample_names[i] for i in c.test]; c["file_train"] = [ds.sample_names[i] for i in c.train]
    c.sort_values(["labels_differ", "distance"], ascending=[False, True]).to_csv(sys.argv[1] + "/train_test_duplicates_mirrored.csv", index=False)
    print("copies", len(c), "mirrored", int(c.mirrored.sum()), "test images", c.test.nunique(),
          "differ", int(c.labels_differ.sum()), flush=True)
