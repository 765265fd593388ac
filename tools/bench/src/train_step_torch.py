"""PyTorch peer of train-step.ts: the same networks, batch, input size and thread count.

Prints progress to stderr and, as its last stdout line, JSON {network: median ms}.
Channels-last memory format, as PyTorch recommends for CPU convolutions. Random weights
(timing only); MobileNetV2's structure follows keras.applications (block_16 + Conv_1 trainable,
BatchNorm in inference mode).
"""
import argparse
import json
import statistics
import sys
import time

import torch
from torch import nn


def convnet(size):
    def out(s):  # conv 3x3 valid, then maxpool 2
        return (s - 2) // 2
    s = size
    for _ in range(4):
        s = out(s)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(128, 128, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128 * s * s, 512), nn.ReLU(), nn.Linear(512, 1), nn.Sigmoid())


def vgg16_base():
    layers, cin = [], 3
    for cout, n in [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]:
        for _ in range(n):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]
            cin = cout
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


def mobilenet_v2_base():
    """Returns (frozen lower part, trainable top part: block_16 + Conv_1)."""
    blocks = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6()]
    cin = 32
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    mods = []
    for t, c, n, s in settings:
        for i in range(n):
            mods.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
            cin = c
    lower = nn.Sequential(*blocks, *mods[:-1])
    top = nn.Sequential(mods[-1], nn.Conv2d(320, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6())
    return lower, top


def timed(fn, steps):
    fn()  # warm-up
    samples = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples), samples


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--batch', type=int, default=20)
    p.add_argument('--size', type=int, default=150)
    p.add_argument('--steps', type=int, default=5)
    p.add_argument('--networks', default='convnet,mobilenet_v2_finetune,mobilenet_v2_forward,vgg16_forward')
    p.add_argument('--mobilenet-dir', default='')
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cl = torch.channels_last
    x = torch.rand(a.batch, 3, a.size, a.size).mul(2).sub(1).contiguous(memory_format=cl)
    y = (torch.rand(a.batch, 1) > 0.5).float()
    bce = nn.BCELoss()
    results = {}
    for net in a.networks.split(','):
        if net == 'convnet':
            model = convnet(a.size).to(memory_format=cl)
            opt = torch.optim.RMSprop(model.parameters(), lr=1e-4, alpha=0.9, eps=1e-7)

            def step():
                opt.zero_grad(set_to_none=True)
                bce(model(x), y).backward()
                opt.step()
        elif net == 'mobilenet_v2_finetune':
            lower, top = mobilenet_v2_base()
            lower, top = lower.to(memory_format=cl), top.to(memory_format=cl)
            for prm in lower.parameters():
                prm.requires_grad_(False)
            feat = 1280 * (-(-a.size // 32)) ** 2
            head = nn.Sequential(nn.Flatten(), nn.Linear(feat, 256), nn.ReLU(), nn.Linear(256, 1), nn.Sigmoid())
            lower.eval()
            top.eval()  # BatchNorm in inference mode
            for m in top.modules():
                if isinstance(m, nn.BatchNorm2d):
                    for prm in m.parameters():
                        prm.requires_grad_(False)
            params = [q for q in list(top.parameters()) + list(head.parameters()) if q.requires_grad]
            opt = torch.optim.RMSprop(params, lr=2e-5, alpha=0.9, eps=1e-7)

            def step():
                opt.zero_grad(set_to_none=True)
                bce(head(top(lower(x))), y).backward()
                opt.step()
        elif net == 'mobilenet_v2_forward':
            lower, top = mobilenet_v2_base()
            model = nn.Sequential(lower, top).to(memory_format=cl).eval()

            def step():
                with torch.no_grad():
                    model(x)
        elif net == 'vgg16_forward':
            model = vgg16_base().to(memory_format=cl).eval()

            def step():
                with torch.no_grad():
                    model(x)
        else:
            raise SystemExit(f'unknown network {net}')
        ms, samples = timed(step, a.steps)
        results[net] = ms
        print(f'torch {net}: {ms:.1f} ms ({" ".join(f"{s:.0f}" for s in samples)})', file=sys.stderr)
    print(json.dumps(results))


if __name__ == '__main__':
    main()
