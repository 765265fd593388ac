"""PyTorch peer of `trainer evaluate` for bench:inference: a run's saved model (its tfjs layers model.json and
weights, read into torch by catdog_torch.KerasGraph, so the network and the weights are the run's own) over the
same images, decoded with PIL (NEAREST squash resize, as Keras' load_img and our decoder), with the same batch
size, decode workers and threads.

    python3 inference_torch.py --model <run>/model --images <folder of cat.N.jpg / dog.N.jpg> --scaling unit|symmetric

Prints progress to stderr; the last stdout line is JSON {"images", "seconds" (loading + decode + forward, from the
first batch request to the last prediction), "images_per_s", "accuracy", "model_seconds" (building the model)}.
"""
import argparse
import json
import os
import time

import torch

from catdog_torch import CLASSES, KerasGraph, image_loader, log, set_threads

CL = torch.channels_last


def folder_items(folder):
    """Kaggle's flat layout: <class>.<n>.jpg, the class from the name (as our evaluate reads such a folder)."""
    items = []
    for name in sorted(os.listdir(folder)):
        cls = name.split('.')[0]
        if cls in CLASSES and name.lower().endswith(('.jpg', '.jpeg', '.png')):
            items.append((os.path.join(folder, name), CLASSES.index(cls)))
    if not items:
        raise SystemExit(f'error: {folder}: no cat.N.jpg / dog.N.jpg images')
    return items


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--model', required=True, help='tfjs layers model folder (a run\'s model/)')
    p.add_argument('--images', required=True)
    p.add_argument('--scaling', choices=['unit', 'symmetric'], required=True)
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--workers', type=int, default=2)
    a = p.parse_args()
    set_threads(a.threads)
    t0 = time.perf_counter()
    model = KerasGraph(a.model).to(memory_format=CL).eval()
    model_seconds = time.perf_counter() - t0
    items = folder_items(a.images)
    t0 = time.perf_counter()
    correct = 0
    with torch.no_grad():
        for x, y in image_loader(items, model.input_size, a.scaling, a.batch_size, workers=a.workers):
            p_dog = model(x.contiguous(memory_format=CL))
            correct += int(((p_dog > 0.5).float() == y).sum())
    seconds = time.perf_counter() - t0
    log(f'torch inference: {len(items)} images in {seconds:.1f}s ({len(items) / seconds:.1f} img/s), accuracy {correct / len(items):.4f}')
    print(json.dumps({'images': len(items), 'seconds': seconds, 'images_per_s': len(items) / seconds,
                      'accuracy': correct / len(items), 'model_seconds': model_seconds}))


if __name__ == '__main__':
    main()
