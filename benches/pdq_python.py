"""PDQ hashes per second with the `pdqhash` package (Python bindings of Meta's reference C++),
one thread, on decoded RGB pixels of the images workers/model/benches/pdq.rs times
(decoding not included; pdqhash's own luminance conversion is). Usage (repository root):
python benches/pdq_python.py"""

import time

import numpy as np
import pdqhash
from PIL import Image

IMAGES = ["noise-64x64.png", "shapes-5.png", "shapes-7.png"]

for name in IMAGES:
    img = np.ascontiguousarray(np.asarray(Image.open(f"models/fixtures/pdq/images/{name}").convert("RGB")))
    h, w = img.shape[:2]
    for label, fn in (("hash", pdqhash.compute), ("dihedral", pdqhash.compute_dihedral)):
        fn(img)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < 2.0:
            fn(img)
            n += 1
        rate = n / (time.perf_counter() - start)
        print(f"pdq/{label}/{w}x{h} {rate:.1f} hashes/s")
