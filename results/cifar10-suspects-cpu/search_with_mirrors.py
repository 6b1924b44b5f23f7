"""The suspects task's near search, mirrors included (374cad3 on), rerun on all of CIFAR-10 without
training: the source of suspects/*_mirrored.csv and of the mirrored counts in docs/results.md.

    python results/cifar10-suspects-cpu/search_with_mirrors.py OUTDIR   # from the project root
"""
import sys, time
import numpy as np, pandas as pd, torch
torch.set_num_threads(1)
from harness.datasets import load_dataset
from harness.near_duplicates import find_duplicates
t = time.time()
ds = load_dataset("imagefolder:/work/shared/data/cifar10", subset=50000)
print("loaded", len(ds.x_train), len(ds.x_test), round(time.time() - t), flush=True)
pairs, copies = find_duplicates(ds.x_train, ds.x_test)
print("searched", round(time.time() - t), flush=True)
names = np.array(ds.classes)
ytr, yte = ds.y_train.numpy(), ds.y_test.numpy()
p = pairs.assign(label_a=ytr[pairs.a], label_a_name=names[ytr[pairs.a]], label_b=ytr[pairs.b],
                 label_b_name=names[ytr[pairs.b]])
p["labels_differ"] = p.label_a != p.label_b
p["file_a"] = [ds.sample_names[i] for i in p.a]; p["file_b"] = [ds.sample_names[i] for i in p.b]
c = copies.assign(label_test=yte[copies.test], label_test_name=names[yte[copies.test]], label_train=ytr[copies.train],
                  label_train_name=names[ytr[copies.train]])
c["labels_differ"] = c.label_test != c.label_train
c["file_test"] = [ds.test_sample_names[i] for i in c.test]; c["file_train"] = [ds.sample_names[i] for i in c.train]
p.sort_values(["labels_differ", "distance"], ascending=[False, True]).to_csv(sys.argv[1] + "/duplicates_mirrored.csv", index=False)
c.sort_values(["labels_differ", "distance"], ascending=[False, True]).to_csv(sys.argv[1] + "/train_test_duplicates_mirrored.csv", index=False)
print("pairs", len(p), "mirrored", int(p.mirrored.sum()), "copies", len(c), "mirrored", int(c.mirrored.sum()),
      "test images", c.test.nunique(), "differ", int(p.labels_differ.sum()), int(c.labels_differ.sum()), flush=True)
