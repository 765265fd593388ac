"""PyTorch peer of `trainer <strategy>` for bench:strategies: the same recipe, phase by phase.

    python3 strategies_torch.py --recipe '<resolved TrainConfig as JSON>' --source <Kaggle train/> \
        --train 1000 --validation 500 --test 500 --weights-dir <dir> --threads 2

The recipe is our trainer's resolved config (strategies.ts passes it), so sizes, batches, epochs, steps, learning
rates, dropout, head, pooling and the fine-tune cut are the trainer's own. Optimizer: RMSprop with Keras'
rho=0.9 and epsilon=1e-7 (torch's defaults are alpha=0.99, eps=1e-8; tf.train.rmsprop adds epsilon inside
the square root, torch outside: same cost). Loss: binary cross-entropy on a sigmoid output.

Phases, named as strategies.ts names ours:
  features      frozen base (or its bottom, below fine_tune_from) over train, validation and test images
  top-features  finetune: globally pooled head features from the cached activations (train, validation; test at the end)
  train | head | finetune  the fitted epochs (training steps + validation), as history.json's phases

Progress goes to stderr; the last stdout line is JSON {"phases": [...], "test": {...}}.
"""
import argparse
import copy
import json
import time

import torch
from torch import nn

from catdog_torch import (KerasGraph, book_augmentation, book_split, convnet, dense_head, fine_tune_cut, image_loader,
                          log, set_threads)

CL = torch.channels_last
FINE_TUNE_FROM = {'mobilenet_v2': 'block_13_expand', 'mobilenet_v2_0.35': 'block_13_expand'}
BASE_DIRS = {'mobilenet_v2': 'mobilenet_v2_1.0_224', 'mobilenet_v2_0.35': 'mobilenet_v2_0.35_224'}


def rmsprop(params, lr):
    return torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7)


def accuracy(p, y):
    return float(((p > 0.5).float() == y).float().mean())


class Phases:
    def __init__(self):
        self.rows = {}

    def add(self, name, seconds, images):
        r = self.rows.setdefault(name, {'phase': name, 'seconds': 0.0, 'images': 0})
        r['seconds'] += seconds
        r['images'] += images


def fit(name, model, params, lr, epochs, steps, val_steps, train_batches, val_batches, phases, keep=None):
    """Keras fit: `steps` training batches then `val_steps` validation batches per epoch. train_batches and
    val_batches are endless iterators of (x, y). keep: {'best': acc, 'state': ...} to keep the best val_acc weights."""
    opt = rmsprop(params, lr)
    bce = nn.BCELoss()
    for epoch in range(epochs):
        t0 = time.perf_counter()
        model.train()
        seen, loss_sum, acc_sum = 0, 0.0, 0.0
        for _ in range(steps):
            x, y = next(train_batches)
            opt.zero_grad(set_to_none=True)
            p = model(x)
            loss = bce(p, y)
            loss.backward()
            opt.step()
            seen += y.shape[0]
            loss_sum += float(loss) * y.shape[0]
            acc_sum += accuracy(p.detach(), y) * y.shape[0]
        train_s = time.perf_counter() - t0
        model.eval()
        vn, vacc = 0, 0.0
        with torch.no_grad():
            for _ in range(val_steps):
                x, y = next(val_batches)
                vacc += accuracy(model(x), y) * y.shape[0]
                vn += y.shape[0]
        seconds = time.perf_counter() - t0
        val_acc = vacc / max(vn, 1)
        phases.add(name, seconds, seen)
        phases.rows[name].setdefault('train_seconds', 0.0)
        phases.rows[name]['train_seconds'] += train_s
        log(f'torch {name} epoch {epoch + 1}/{epochs} - {seconds:.1f}s - loss {loss_sum / seen:.4f} - acc {acc_sum / seen:.4f}'
            f' - val_acc {val_acc:.4f} - {seen / train_s:.1f} img/s')
        if keep is not None and (keep['best'] is None or val_acc > keep['best']):
            keep['best'] = val_acc
            keep['state'] = copy.deepcopy(keep['module'].state_dict())


def endless(loader, transform=None):
    """Batches of a DataLoader whose sampler already spans every epoch; channels-last images."""
    for x, y in loader:
        yield (x.contiguous(memory_format=CL) if x.dim() == 4 else x) if transform is None else transform(x), y


def tensor_batches(x, y, batch, shuffle, seed):
    """Endless batches of in-memory tensors (cached features), reshuffled each pass."""
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    while True:
        order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            yield x[idx], y[idx]


def run_through(fn, items, r, a, scaling, batch):
    """Frozen forward over one split's images (one pass, 2 decode workers): (outputs, labels, images)."""
    outs, labels = [], []
    with torch.no_grad():
        for x, y in image_loader(items, r['inputSize'], scaling, batch, workers=a.workers):
            outs.append(fn(x.contiguous(memory_format=CL)).contiguous())
            labels.append(y)
    return torch.cat(outs), torch.cat(labels)


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--recipe', required=True, help="our trainer's resolved config (JSON)")
    p.add_argument('--source', required=True, help="Kaggle's train/ folder (cat.N.jpg, dog.N.jpg)")
    p.add_argument('--train', type=int, default=1000)
    p.add_argument('--validation', type=int, default=500)
    p.add_argument('--test', type=int, default=500)
    p.add_argument('--weights-dir', default='')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--workers', type=int, default=2)
    a = p.parse_args()
    r = json.loads(a.recipe)
    set_threads(a.threads)
    torch.manual_seed(r.get('seed', 1337))
    split = book_split(a.source, a.train, a.validation, a.test)
    n = {k: len(v) for k, v in split.items()}
    scaling = r.get('inputScaling') or ('symmetric' if r.get('base', '').startswith('mobilenet') else 'unit')
    steps_for = lambda count, batch, configured: configured if configured is not None else -(-count // batch)
    phases = Phases()
    strategy = r['strategy']
    seed = r.get('seed', 1337)
    test = {}

    if strategy in ('scratch', 'augmented'):
        size, batch, epochs = r['inputSize'], r['batchSize'], r['epochs']
        steps = steps_for(n['train'], batch, r['stepsPerEpoch'])
        val_steps = steps_for(n['validation'], batch, r['validationSteps'])
        model = convnet(size, r['dropout']).to(memory_format=CL)
        aug = book_augmentation() if r['augment'] else None
        train = image_loader(split['train'], size, scaling, batch, draws=epochs * steps * batch, shuffle=True, augment=aug,
                             workers=a.workers, seed=seed)
        val = image_loader(split['validation'], size, scaling, batch, draws=epochs * val_steps * batch, workers=a.workers)
        fit('train', model, model.parameters(), r['learningRate'], epochs, steps, val_steps, endless(train), endless(val), phases)
        model.eval()
        with torch.no_grad():
            preds, labels = [], []
            for x, y in image_loader(split['test'], size, scaling, batch, workers=a.workers):
                preds.append(model(x.contiguous(memory_format=CL)))
                labels.append(y)
        test = {'accuracy': accuracy(torch.cat(preds), torch.cat(labels)), 'n': n['test']}

    elif strategy in ('extract', 'finetune'):
        base = KerasGraph(f"{a.weights_dir}/{BASE_DIRS[r['base']]}").to(memory_format=CL).eval()
        for prm in base.parameters():
            prm.requires_grad_(False)
        pool = r['headPooling'] == 'avg'
        pooled = (lambda t: t.mean(dim=(2, 3))) if pool else (lambda t: t)
        # NCHW features flattened for a flatten head (Keras flattens NHWC: same layer, features in another order)
        if strategy == 'extract':
            batch = r['batchSize']
            feats, labels = {}, {}
            for s in ('train', 'validation', 'test'):
                t0 = time.perf_counter()
                feats[s], labels[s] = run_through(lambda x: pooled(base(x)), split[s], r, a, scaling, batch)
                phases.add('features', time.perf_counter() - t0, n[s])
                log(f'torch features: {s} {tuple(feats[s].shape)} in {time.perf_counter() - t0:.1f}s')
            dim = int(feats['train'][0].numel())
            head = dense_head(dim, r['headUnits'], r['dropout'])
            steps = steps_for(n['train'], batch, r['stepsPerEpoch'])
            val_steps = -(-n['validation'] // batch)  # our featurePhase: one validation pass
            fit('train', head, head.parameters(), r['learningRate'], r['epochs'], steps, val_steps,
                tensor_batches(feats['train'], labels['train'], batch, True, seed),
                tensor_batches(feats['validation'], labels['validation'], batch, False, seed), phases)
            head.eval()
            with torch.no_grad():
                test = {'accuracy': accuracy(head(feats['test']), labels['test']), 'n': n['test']}
        else:
            if r.get('fineTuneInput') != 'cached-activations' or r.get('headTraining') != 'features':
                raise SystemExit('error: strategies_torch.py implements finetune with headTraining=features and '
                                 'fineTuneInput=cached-activations (the cpu-quick preset) only')
            first = r.get('fineTuneFrom') or FINE_TUNE_FROM[r['base']]
            cut = fine_tune_cut(base, first)
            batch = r['batchSize']
            acts, labels = {}, {}
            for s in ('train', 'validation', 'test'):
                t0 = time.perf_counter()
                acts[s], labels[s] = run_through(lambda x: base(x, end=cut), split[s], r, a, scaling, batch)
                phases.add('features', time.perf_counter() - t0, n[s])
                log(f'torch activations@{first}: {s} {tuple(acts[s].shape)} in {time.perf_counter() - t0:.1f}s')
            top_names = set(base.names_from(first))
            for name, op in base.ops.items():
                if name in top_names and not isinstance(op, nn.BatchNorm2d):
                    for prm in op.parameters():
                        prm.requires_grad_(False)
            top = lambda x: pooled(base(x, start=cut))

            def top_features(s):
                t0 = time.perf_counter()
                with torch.no_grad():
                    out = torch.cat([top(acts[s][i:i + batch].contiguous(memory_format=CL)) for i in range(0, n[s], batch)])
                phases.add('top-features', time.perf_counter() - t0, n[s])
                return out

            feats = {s: top_features(s) for s in ('train', 'validation')}
            dim = int(feats['train'][0].numel())
            head = dense_head(dim, r['headUnits'], r['dropout'])
            whole = nn.ModuleDict({'base': base, 'head': head})
            keep = {'best': None, 'state': None, 'module': whole} if r.get('keepBest') else None
            hb = r['headBatchSize']
            fit('head', head, head.parameters(), r['headLearningRate'], r['headEpochs'], -(-n['train'] // hb), -(-n['validation'] // hb),
                tensor_batches(feats['train'], labels['train'], hb, True, seed),
                tensor_batches(feats['validation'], labels['validation'], hb, False, seed), phases, keep)
            # Unfreeze the top of the base (BatchNorm stays frozen and in inference mode, as setTrainableFrom does).
            for name, op in base.ops.items():
                if name in top_names and not isinstance(op, nn.BatchNorm2d):
                    for prm in op.parameters():
                        prm.requires_grad_(True)

            class Top(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.base, self.head = base, head

                def forward(self, x):
                    return self.head(top(x))

            model = Top()
            params = [q for q in model.parameters() if q.requires_grad]
            log(f'torch finetune from {first}: {len(params)} trainable tensors')
            fit('finetune', model, params, r['learningRate'], r['epochs'], steps_for(n['train'], batch, r['stepsPerEpoch']),
                steps_for(n['validation'], batch, r['validationSteps']),
                tensor_batches(acts['train'], labels['train'], batch, True, seed),
                tensor_batches(acts['validation'], labels['validation'], batch, False, seed), phases, keep)
            if keep is not None and keep['state'] is not None:
                whole.load_state_dict(keep['state'])
            feats['test'] = top_features('test')
            head.eval()
            with torch.no_grad():
                test = {'accuracy': accuracy(head(feats['test']), labels['test']), 'n': n['test']}
    else:
        raise SystemExit(f'error: strategy {strategy} is not implemented by strategies_torch.py')

    rows = list(phases.rows.values())
    for row in rows:
        row['images_per_s'] = row['images'] / row.get('train_seconds', row['seconds'])
    log(f"torch {strategy}: test accuracy {test['accuracy']:.4f} on {test['n']} images")
    print(json.dumps({'phases': rows, 'test': test}))


if __name__ == '__main__':
    main()
