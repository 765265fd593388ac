#!/usr/bin/python3
"""Peers of our augmentation benchmark (`augment bench`), measured on the same images on the same machine.

Run with Debian's python3 (python3-torch, python3-torchvision, python3-pil, python3-scipy, python3-numpy):

    /usr/bin/python3 tools/bench/src/augment_peers.py --source ../shared/datasets/dogs-vs-cats/train --limit 2000

Peers, each at 1 and 2 processes, batches of --batch images assembled into one float32 array, median of --passes:
  keras        Keras 2 ImageDataGenerator semantics reimplemented: PIL nearest resize to size×size (load_img),
               random_transform + apply_affine_transform (rotation 40, shifts 0.2, shear 0.2, zoom 0.2, horizontal
               flip, fill nearest) via scipy.ndimage.affine_transform order=1 per channel, rescale 1/255.
               2 processes = multiprocessing.Pool, one batch per task (Keras' Sequence + workers).
  torchvision  Resize((size, size)) + RandomAffine(40, (0.2, 0.2), (0.8, 1.2), 0.2) + RandomHorizontalFlip +
               ToTensor, DataLoader(batch_size, num_workers=0 for 1 process, 2 for 2 processes).
  pil-full     floor: PIL decode only (full resolution), no resize, augment or batch.
  pil-draft    floor: PIL decode only in draft mode (img.draft('RGB', (size, size)): JPEG DCT downscaling).

The file selection is the one of `augment bench --limit N`: classes in alphabetical order (Kaggle's cat.N/dog.N →
cats, dogs; or one folder per class), an equal share of N per class (earlier classes take the remainder), files in
numeric order within a class. Encoded bytes are read into memory before any timing, as our bench does.
Prints one JSON object on stdout; progress goes to stderr.
"""
import argparse
import io
import json
import math
import multiprocessing as mp
import os
import platform
import re
import statistics
import sys
import time

import numpy as np
from PIL import Image

FLAT_NAME = re.compile(r'^([A-Za-z][A-Za-z0-9_-]*)\.(\d+)\.([A-Za-z0-9]+)$')
IMAGE_EXT = {'jpg', 'jpeg', 'png', 'webp', 'gif', 'bmp', 'tif', 'tiff'}
PEERS = ('keras', 'torchvision', 'pil-full', 'pil-draft')


def natural_key(s):
    return [(0, int(p), len(p)) if p.isdigit() else (1, p) for p in re.findall(r'\d+|\D+', s)]


def list_images(source, limit):
    """(path, label) pairs, the same selection and order as `augment bench --limit`."""
    if not os.path.isdir(source):
        sys.exit(f'error: source folder not found: {source}')
    names = [n for n in os.listdir(source) if not n.startswith('.')]
    by_class = {}
    flat = [(n, FLAT_NAME.match(n)) for n in names if os.path.isfile(os.path.join(source, n))]
    flat = [(n, m) for n, m in flat if m]
    if flat:
        for n, m in flat:
            p = m.group(1).lower()
            cls = p if p.endswith('s') else p + 's'
            by_class.setdefault(cls, []).append((int(m.group(2)), n))
        for cls in by_class:
            by_class[cls] = [os.path.join(source, n) for _, n in sorted(by_class[cls], key=lambda t: (t[0], natural_key(t[1])))]
    else:
        for d in names:
            folder = os.path.join(source, d)
            if not os.path.isdir(folder):
                continue
            files = [f for f in os.listdir(folder) if not f.startswith('.') and f.rsplit('.', 1)[-1].lower() in IMAGE_EXT]
            if files:
                files.sort(key=lambda f: natural_key(f.rsplit('.', 1)[0]) + [(2, f)])
                by_class[d] = [os.path.join(folder, f) for f in files]
    if not by_class:
        sys.exit(f'error: no images in {source} (expected Kaggle-named cat.N.jpg / dog.N.jpg, or one folder per class)')
    classes = sorted(by_class)
    k = len(classes)
    selected = []
    for i, cls in enumerate(classes):
        quota = limit // k + (1 if i < limit % k else 0)
        selected += [(p, i) for p in by_class[cls][:quota]]
    return classes, selected


# ---- shared state: filled in the parent before the pools fork, so workers inherit the bytes without pickling ----
ENCODED = []  # bytes per image
CONFIG = {}


# ---- Keras 2 ImageDataGenerator, reimplemented (keras_preprocessing/image/image_data_generator.py, affine_transformations.py)
def transform_matrix_offset_center(matrix, x, y):
    o_x = float(x) / 2 + 0.5
    o_y = float(y) / 2 + 0.5
    offset_matrix = np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]])
    reset_matrix = np.array([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]])
    return offset_matrix @ matrix @ reset_matrix


def keras_random_params(rng, h, w):
    # ImageDataGenerator(rotation_range=40, width_shift_range=0.2, height_shift_range=0.2, shear_range=0.2,
    #                    zoom_range=0.2, horizontal_flip=True, fill_mode='nearest'): get_random_transform
    theta = rng.uniform(-40, 40)
    tx = rng.uniform(-0.2, 0.2) * h  # height_shift_range × rows (Keras' tx moves along the row axis)
    ty = rng.uniform(-0.2, 0.2) * w
    shear = rng.uniform(-0.2, 0.2)  # degrees, as Keras 2 reads shear_range
    zx, zy = rng.uniform(0.8, 1.2, 2)
    flip = rng.random() < 0.5
    return theta, tx, ty, shear, zx, zy, flip


def keras_apply_affine(x, theta, tx, ty, shear, zx, zy):
    from scipy import ndimage  # imported (and inherited by forked workers) before any timing: see main()
    matrix = None
    if theta != 0:
        t = np.deg2rad(theta)
        matrix = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    if tx != 0 or ty != 0:
        shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
        matrix = shift if matrix is None else matrix @ shift
    if shear != 0:
        s = np.deg2rad(shear)
        sh = np.array([[1, -np.sin(s), 0], [0, np.cos(s), 0], [0, 0, 1]])
        matrix = sh if matrix is None else matrix @ sh
    if zx != 1 or zy != 1:
        zoom = np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
        matrix = zoom if matrix is None else matrix @ zoom
    if matrix is None:
        return x
    h, w = x.shape[0], x.shape[1]
    matrix = transform_matrix_offset_center(matrix, h, w)
    channels = np.rollaxis(x, 2, 0)
    out = [ndimage.affine_transform(c, matrix[:2, :2], matrix[:2, 2], order=1, mode='nearest', cval=0.0) for c in channels]
    return np.stack(out, axis=2)


def keras_batch(task):
    """One batch: load_img(target_size, interpolation='nearest') → img_to_array float32 → random_transform → rescale."""
    epoch, indices = task
    size = CONFIG['size']
    batch = np.zeros((len(indices), size, size, 3), dtype=np.float32)
    for j, i in enumerate(indices):
        img = Image.open(io.BytesIO(ENCODED[i]))
        if img.mode != 'RGB':
            img = img.convert('RGB')
        img = img.resize((size, size), Image.NEAREST)
        x = np.asarray(img, dtype=np.float32)
        rng = np.random.default_rng((CONFIG['seed'], epoch, i))
        theta, tx, ty, shear, zx, zy, flip = keras_random_params(rng, size, size)
        x = keras_apply_affine(x, theta, tx, ty, shear, zx, zy)
        if flip:
            x = x[:, ::-1, :]
        batch[j] = x * (1.0 / 255)
    return batch


def pil_decode_batch(task):
    _, indices = task
    draft = CONFIG['draft']
    size = CONFIG['size']
    pixels = 0
    for i in indices:
        img = Image.open(io.BytesIO(ENCODED[i]))
        if draft:
            img.draft('RGB', (size, size))
        img.load()
        pixels += img.size[0] * img.size[1]
    return pixels


def batches_of(order, batch):
    return [order[s:s + batch] for s in range(0, len(order), batch)]


def run_pool_peer(fn, processes, passes, batch, seed):
    """Keras-style: an epoch is the shuffled index list cut into batches; with 2 processes a Pool maps one batch per task."""
    n = len(ENCODED)
    rates = []
    pool = mp.get_context('fork').Pool(processes) if processes > 1 else None
    try:
        if pool:
            pool.map(int, range(processes))  # workers up before any timing, as our bench's stream.ready()
        for epoch in range(passes):
            order = np.random.default_rng((seed, epoch)).permutation(n).tolist()
            tasks = [(epoch, b) for b in batches_of(order, batch)]
            t = time.perf_counter()
            images = 0
            results = pool.imap(fn, tasks) if pool else map(fn, tasks)
            for (_, b), r in zip(tasks, results):
                images += len(b)
                if isinstance(r, np.ndarray):
                    assert r.shape[0] == len(b) and r.dtype == np.float32
            rates.append(images / (time.perf_counter() - t))
    finally:
        if pool:
            pool.close()
            pool.join()
    return rates


class EncodedDataset:
    """torch Dataset over the in-memory encoded images, torchvision transforms applied in __getitem__."""

    def __init__(self, labels, transform):
        self.labels = labels
        self.transform = transform

    def __len__(self):
        return len(ENCODED)

    def __getitem__(self, i):
        img = Image.open(io.BytesIO(ENCODED[i])).convert('RGB')
        return self.transform(img), self.labels[i]


def run_torchvision(labels, processes, passes, batch, size, seed):
    import torch
    from torch.utils.data import DataLoader
    from torchvision import transforms
    tf = transforms.Compose([
        transforms.Resize((size, size)),
        # torchvision 0.14: shear=0.2 is ±0.2 degrees on x (as Keras 2's shear_range=0.2), translate is a fraction.
        transforms.RandomAffine(40, (0.2, 0.2), (0.8, 1.2), 0.2),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
    ])
    workers = 0 if processes == 1 else processes
    g = torch.Generator()
    g.manual_seed(seed)
    loader = DataLoader(EncodedDataset(labels, tf), batch_size=batch, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, generator=g, multiprocessing_context='fork' if workers else None)
    rates = []
    for _ in range(passes):
        t = time.perf_counter()
        images = 0
        for xs, _ in loader:
            assert xs.dtype == torch.float32
            images += xs.shape[0]
        rates.append(images / (time.perf_counter() - t))
    del loader
    return rates


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--source', default=os.path.join(os.path.dirname(__file__), '../../../../shared/datasets/dogs-vs-cats/train'))
    ap.add_argument('--limit', type=int, default=2000)
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--size', type=int, default=150)
    ap.add_argument('--passes', type=int, default=3)
    ap.add_argument('--processes', default='1,2', help='comma-separated process counts')
    ap.add_argument('--peers', default=','.join(PEERS), help=f'comma-separated subset of {",".join(PEERS)}')
    ap.add_argument('--seed', type=int, default=1)
    args = ap.parse_args()
    for name in ('limit', 'batch', 'size', 'passes', 'seed'):
        if getattr(args, name) < 1:
            sys.exit(f'error: --{name} must be a positive integer')
    peers = [p for p in args.peers.split(',') if p]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        sys.exit(f'error: unknown peer(s) {",".join(unknown)} (expected {",".join(PEERS)})')
    try:
        processes = [int(p) for p in args.processes.split(',')]
        assert all(p >= 1 for p in processes)
    except (ValueError, AssertionError):
        sys.exit('error: --processes must be comma-separated positive integers')

    versions = {'python': platform.python_version(), 'numpy': np.__version__, 'PIL': Image.__version__}
    missing = []
    if 'keras' in peers:
        try:
            import scipy
            import scipy.ndimage  # noqa: F401  (loaded before timing and before the pools fork)
            versions['scipy'] = scipy.__version__
        except ImportError:
            missing.append('python3-scipy')
    if 'torchvision' in peers:
        try:
            import torch
            import torchvision
            versions['torch'] = torch.__version__
            versions['torchvision'] = torchvision.__version__
            # One intra-op thread: "1 process" means one core; DataLoader workers use one thread each anyway.
            torch.set_num_threads(1)
        except ImportError:
            missing.append('python3-torch python3-torchvision')
    if missing:
        sys.exit(f'error: missing Debian packages: apt-get install -y {" ".join(missing)}')

    source = os.path.abspath(args.source)
    classes, selected = list_images(source, args.limit)
    ENCODED.extend(open(p, 'rb').read() for p, _ in selected)
    labels = [label for _, label in selected]
    # PIL loads its format plugins on first use: warm it up in the parent, so neither the first timed pass nor the
    # forked workers pay for it.
    Image.open(io.BytesIO(ENCODED[0])).convert('RGB')
    CONFIG.update(size=args.size, seed=args.seed, draft=False)
    mib = sum(len(b) for b in ENCODED) / 1024 ** 2
    counts = ', '.join(f'{labels.count(i)} {c}' for i, c in enumerate(classes))
    print(f'peers: {len(ENCODED)} images ({counts}; {mib:.1f} MiB encoded) from {source}, {args.size}x{args.size}, '
          f'batch {args.batch}, {args.passes} passes, {os.cpu_count()} cores', file=sys.stderr)

    results = {}
    for peer in peers:
        results[peer] = {}
        for procs in processes:
            if peer == 'torchvision':
                rates = run_torchvision(labels, procs, args.passes, args.batch, args.size, args.seed)
            else:
                CONFIG['draft'] = peer == 'pil-draft'
                fn = keras_batch if peer == 'keras' else pil_decode_batch
                rates = run_pool_peer(fn, procs, args.passes, args.batch, args.seed)
            med = statistics.median(rates)
            results[peer][str(procs)] = {'images_per_s': med, 'passes': rates}
            print(f'{peer} processes={procs} images_per_s={med:.0f} passes=[{", ".join(f"{r:.0f}" for r in rates)}]',
                  file=sys.stderr)

    print(json.dumps({
        'source': source, 'images': len(ENCODED), 'classes': classes, 'size': args.size, 'batch': args.batch,
        'passes': args.passes, 'cores': os.cpu_count(), 'versions': versions, 'results': results,
    }))


if __name__ == '__main__':
    main()
