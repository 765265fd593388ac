"""PyTorch peers of catdog's networks and data pipeline, shared by strategies_torch.py and inference_torch.py.

- The book's convnet (and its dropout variant), initialised as Keras does (glorot_uniform kernels, zero biases).
- MobileNetV2 with the SAME weights as our trainer: the tfjs layers model (model.json + weight shards) is read
  with numpy and interpreted layer by layer from its Keras topology, so the graph is Keras' own: ZeroPadding2D
  ((0,1),(0,1)) before every stride-2 conv (Keras' asymmetric padding, not torchvision's symmetric one),
  BatchNorm eps 1e-3, ReLU6. BatchNorm always runs in inference mode, as ours does (Keras semantics for frozen BN).
- The book's split read straight from Kaggle's train/ folder by the book's index ranges, decoded with PIL and
  squashed to the input size with NEAREST (Keras load_img(target_size)).
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

CLASSES = ('cat', 'dog')  # label = index: cat 0, dog 1 (alphabetical, as flow_from_directory and our manifest)


# ---------------------------------------------------------------------------------------------------- data

def book_split(source, train=1000, validation=500, test=500):
    """{split: [(path, label)]}: per class, train = indices [0, train), validation next, test next (the book)."""
    ranges = {'train': (0, train), 'validation': (train, train + validation), 'test': (train + validation, train + validation + test)}
    out = {}
    for split, (lo, hi) in ranges.items():
        items = []
        for label, cls in enumerate(CLASSES):
            for i in range(lo, hi):
                path = os.path.join(source, f'{cls}.{i}.jpg')
                if not os.path.exists(path):
                    raise SystemExit(f'error: {path} not found (the book split needs {cls}.0 to {cls}.{hi - 1}.jpg in {source})')
                items.append((path, label))
        out[split] = items
    return out


def load_image(path, size):
    """PIL decode + NEAREST squash resize, as Keras' load_img(target_size=(size, size)). PIL decodes with libjpeg's
    accurate integer IDCT; our default decoder ('fast') uses libjpeg-turbo's fast IDCT (pixels within ±4 levels,
    so predictions can differ in the second decimal on MobileNetV2) and is the cheaper of the two."""
    with Image.open(path) as im:
        return im.convert('RGB').resize((size, size), Image.NEAREST)


def to_tensor(im, scaling):
    """HWC uint8 -> CHW float: 'unit' x/255, 'symmetric' x/127.5-1 (MobileNetV2's preprocess_input)."""
    x = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).float()
    return x / 255.0 if scaling == 'unit' else x / 127.5 - 1.0


class ImageDataset(torch.utils.data.Dataset):
    def __init__(self, items, size, scaling, augment=None):
        self.items, self.size, self.scaling, self.augment = items, size, scaling, augment

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        im = load_image(path, self.size)
        if self.augment is not None:
            im = self.augment(im)
        return to_tensor(im, self.scaling), torch.tensor([float(label)])


def book_augmentation():
    """torchvision's nearest equivalent of the book's ImageDataGenerator(rotation_range=40, width_shift_range=0.2,
    height_shift_range=0.2, shear_range=0.2, zoom_range=0.2, horizontal_flip=True, fill_mode='nearest'), applied,
    as Keras does, to the already resized image. Where the semantics differ:
    - zoom: Keras draws zx and zy independently from [0.8, 1.2] (anisotropic); RandomAffine's scale is one factor.
    - shear: Keras (>= 2.2, and our augment package) reads shear_range as degrees: shear=0.2 (degrees) here too.
    - fill: Keras fill_mode='nearest' repeats edge pixels; RandomAffine only fills a constant (0 here). The cost
      of the warp is the same; the pixels at the borders differ.
    - interpolation: both nearest.
    """
    from torchvision import transforms as T
    return T.Compose([
        T.RandomAffine(degrees=40, translate=(0.2, 0.2), scale=(0.8, 1.2), shear=0.2,
                       interpolation=T.InterpolationMode.NEAREST, fill=0),
        T.RandomHorizontalFlip(),
    ])


class ForeverSampler(torch.utils.data.Sampler):
    """Indices of `n` items in `count` draws: consecutive (shuffled, seeded) passes, as a Keras generator repeats.
    One DataLoader over it serves all epochs, so workers never restart at an epoch boundary (neither do ours)."""

    def __init__(self, n, count, shuffle, seed):
        self.n, self.count, self.shuffle, self.seed = n, count, shuffle, seed

    def __len__(self):
        return self.count

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed)
        done = 0
        while done < self.count:
            order = torch.randperm(self.n, generator=g).tolist() if self.shuffle else list(range(self.n))
            take = order[: self.count - done]
            done += len(take)
            yield from take


def image_loader(items, size, scaling, batch, draws=None, shuffle=False, augment=None, workers=2, seed=1337):
    """A DataLoader of (x, y) batches; `draws` images in all (default one pass), `workers` decode processes."""
    ds = ImageDataset(items, size, scaling, augment)
    sampler = ForeverSampler(len(items), draws if draws is not None else len(items), shuffle, seed)
    return torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers,
                                       persistent_workers=False, prefetch_factor=2 if workers > 0 else None)


# ---------------------------------------------------------------------------------------------------- networks

def keras_init(module):
    """glorot_uniform kernels and zero biases, as Keras' defaults (torch's defaults train differently)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def convnet(size, dropout=0.0):
    """The book's convnet (5.2): 4 × (conv 3x3 valid + relu, maxpool 2), flatten, [dropout], dense 512, dense 1."""
    s = size
    for _ in range(4):
        s = (s - 2) // 2
    layers = [
        nn.Conv2d(3, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(128, 128, 3), nn.ReLU(), nn.MaxPool2d(2),
        # Keras flattens NHWC; the order of the 128*s*s features differs from NCHW's but the layer is the same.
        nn.Flatten(),
    ]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers += [nn.Linear(128 * s * s, 512), nn.ReLU(), nn.Linear(512, 1), nn.Sigmoid()]
    return keras_init(nn.Sequential(*layers))


def dense_head(features, units=256, dropout=0.5):
    """Our buildDenseHead: [flatten], dense(units, relu), dropout, dense(1, sigmoid)."""
    layers = [nn.Flatten(), nn.Linear(features, units), nn.ReLU()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers += [nn.Linear(units, 1), nn.Sigmoid()]
    return keras_init(nn.Sequential(*layers))


def _keras_same_pad(x, kernel, stride):
    """TF 'same' padding: total = max((ceil(in/s)-1)*s + k - in, 0), the extra pixel at the bottom/right."""
    pads = []
    for dim, k, s in ((x.shape[3], kernel[1], stride[1]), (x.shape[2], kernel[0], stride[0])):
        total = max((-(-dim // s) - 1) * s + k - dim, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class _Conv(nn.Module):
    def __init__(self, conv, same):
        super().__init__()
        self.conv, self.same = conv, same

    def forward(self, x):
        if self.same:
            x = _keras_same_pad(x, self.conv.kernel_size, self.conv.stride)
        return self.conv(x)


class _ZeroPad(nn.Module):
    """ZeroPadding2D. With `kernel` (it feeds a strided 'valid' conv) the pads follow the input size as
    keras.applications' correct_pad does (our loader recomputes them the same way): ((k//2 - adjust, k//2), ...)
    with adjust = 1 for even sizes, so 150 px gives 5×5×1280 as Keras' MobileNetV2(input_shape=(150,150,3))."""

    def __init__(self, padding, kernel=None):
        super().__init__()
        (top, bottom), (left, right) = padding
        self.pads = [left, right, top, bottom]
        self.kernel = kernel

    def forward(self, x):
        if self.kernel is None:
            return F.pad(x, self.pads)
        (kh, kw), h, w = self.kernel, x.shape[2], x.shape[3]
        return F.pad(x, [kw // 2 - (1 - w % 2), kw // 2, kh // 2 - (1 - h % 2), kh // 2])


def _activation(name, layer):
    if name in (None, 'linear'):
        return nn.Identity()
    if name == 'relu':
        return nn.ReLU()
    if name == 'sigmoid':
        return nn.Sigmoid()
    raise SystemExit(f'error: layer {layer}: activation {name} is not supported by this bench')


class _FlattenNHWC(nn.Module):
    """Keras flattens channels-last maps: NCHW -> NHWC first, so a saved Dense kernel sees its features in order."""

    def forward(self, x):
        return x.permute(0, 2, 3, 1).flatten(1) if x.dim() == 4 else x.flatten(1)


class _GlobalAvg(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


class KerasGraph(nn.Module):
    """A Keras functional model (tfjs layers-model topology) as a torch module, its weights read from the shards.

    forward(x, start=None, end=None): feeds x as the output of layer `start` (default: the input) and returns
    the output of layer `end` (default: the model's output), so a model can be split at any single-tensor cut.
    """

    def __init__(self, model_dir):
        super().__init__()
        with open(os.path.join(model_dir, 'model.json')) as f:
            spec = json.load(f)
        topo = spec['modelTopology']
        model = topo.get('model_config') or topo
        config = model['config']
        sequential = model['class_name'] == 'Sequential'
        layers = config['layers'] if isinstance(config, dict) else config
        self.name = config.get('name', 'model') if isinstance(config, dict) else 'sequential'
        self.order, self.inbound, self.kind = [], {}, {}
        self.ops = nn.ModuleDict()
        weights = _read_weights(model_dir, spec['weightsManifest'])
        if sequential:  # a Sequential lists its layers in order, each fed by the one before
            self.order.append('__input__')
            self.kind['__input__'] = 'InputLayer'
            self.inbound['__input__'] = []
        for layer in layers:
            cls, c = layer['class_name'], layer['config']
            name = c['name']
            prev = self.order[-1] if self.order else None
            self.order.append(name)
            self.kind[name] = cls
            if sequential:
                self.inbound[name] = [prev]
            else:
                self.inbound[name] = [n[0] for n in layer['inbound_nodes'][0]] if layer['inbound_nodes'] else []
            if cls == 'InputLayer':
                continue
            act = _activation(c.get('activation'), name)
            if cls == 'Conv2D':
                k = weights[f'{name}/kernel']  # HWIO
                conv = nn.Conv2d(k.shape[2], k.shape[3], tuple(c['kernel_size']), tuple(c['strides']), bias=c['use_bias'])
                conv.weight.data.copy_(torch.from_numpy(k.transpose(3, 2, 0, 1)))
                if c['use_bias']:
                    conv.bias.data.copy_(torch.from_numpy(weights[f'{name}/bias']))
                self.ops[name] = nn.Sequential(_Conv(conv, c['padding'] == 'same'), act)
            elif cls == 'DepthwiseConv2D':
                k = weights[f'{name}/depthwise_kernel']  # H W C M
                ch = k.shape[2] * k.shape[3]
                conv = nn.Conv2d(k.shape[2], ch, tuple(c['kernel_size']), tuple(c['strides']), groups=k.shape[2], bias=c['use_bias'])
                conv.weight.data.copy_(torch.from_numpy(k.transpose(2, 3, 0, 1).reshape(ch, 1, k.shape[0], k.shape[1])))
                if c['use_bias']:
                    conv.bias.data.copy_(torch.from_numpy(weights[f'{name}/bias']))
                self.ops[name] = nn.Sequential(_Conv(conv, c['padding'] == 'same'), act)
            elif cls == 'BatchNormalization':
                gamma = weights[f'{name}/gamma']
                bn = nn.BatchNorm2d(gamma.shape[0], eps=c['epsilon'])
                bn.weight.data.copy_(torch.from_numpy(gamma))
                bn.bias.data.copy_(torch.from_numpy(weights[f'{name}/beta']))
                bn.running_mean.copy_(torch.from_numpy(weights[f'{name}/moving_mean']))
                bn.running_var.copy_(torch.from_numpy(weights[f'{name}/moving_variance']))
                for p in bn.parameters():
                    p.requires_grad_(False)  # frozen BatchNorm, as setTrainableFrom keeps it
                self.ops[name] = bn
            elif cls == 'ReLU':
                mx = c.get('max_value')
                self.ops[name] = nn.ReLU6() if mx == 6 else nn.ReLU() if mx is None else nn.Hardtanh(0, float(mx))
            elif cls == 'ZeroPadding2D':
                consumer = next((l for l in layers if l.get('inbound_nodes') and l['inbound_nodes'][0][0][0] == name), None)
                strided = consumer is not None and consumer['config'].get('padding') == 'valid' and max(consumer['config'].get('strides', [1])) > 1
                self.ops[name] = _ZeroPad(c['padding'], tuple(consumer['config']['kernel_size']) if strided else None)
            elif cls == 'MaxPooling2D':
                if c.get('padding', 'valid') != 'valid':
                    raise SystemExit(f'error: {model_dir}: {name}: only valid max pooling is supported by this bench')
                self.ops[name] = nn.MaxPool2d(tuple(c['pool_size']), tuple(c.get('strides') or c['pool_size']))
            elif cls == 'Flatten':
                self.ops[name] = _FlattenNHWC()
            elif cls == 'GlobalAveragePooling2D':
                self.ops[name] = _GlobalAvg()
            elif cls == 'Dense':
                k = weights[f'{name}/kernel']  # [in, out]
                dense = nn.Linear(k.shape[0], k.shape[1], bias=c['use_bias'])
                dense.weight.data.copy_(torch.from_numpy(k.T.copy()))
                if c['use_bias']:
                    dense.bias.data.copy_(torch.from_numpy(weights[f'{name}/bias']))
                self.ops[name] = nn.Sequential(dense, act)
            elif cls == 'Dropout':
                self.ops[name] = nn.Dropout(c['rate'])
            elif cls == 'Add':
                pass
            else:
                raise SystemExit(f'error: {model_dir}: layer {name} of class {cls} is not supported by this bench')
        shape = (layers[0]['config'].get('batch_input_shape') or [None, None, None, None])
        self.input_size = shape[1]
        self.output_name = self.order[-1]

    def train(self, mode=True):
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()  # BatchNorm always in inference mode (Keras semantics of a frozen BN, and ours)
        return self

    def names_from(self, first):
        return self.order[self.order.index(first):]

    def forward(self, x, start=None, end=None):
        begin = self.order.index(start) + 1 if start else 1
        stop = self.order.index(end or self.output_name)
        values = {start or self.order[0]: x}
        for name in self.order[begin:stop + 1]:
            ins = self.inbound[name]
            if any(i not in values for i in ins):
                raise SystemExit(f'error: {name} needs {ins}, not all computed after cutting at {start}')
            if self.kind[name] == 'Add':
                out = values[ins[0]]
                for i in ins[1:]:
                    out = out + values[i]
            else:
                out = self.ops[name](values[ins[0]])
            values[name] = out
        return values[self.order[stop]]


def _read_weights(model_dir, manifest):
    out = {}
    for group in manifest:
        data = b''.join(open(os.path.join(model_dir, p), 'rb').read() for p in group['paths'])
        offset = 0
        for w in group['weights']:
            if w.get('quantization') or w['dtype'] != 'float32':
                raise SystemExit(f"error: {model_dir}: weight {w['name']} is {w['dtype']}/quantized; only float32 is supported")
            n = int(np.prod(w['shape'])) if w['shape'] else 1
            out[w['name']] = np.frombuffer(data, dtype='<f4', count=n, offset=offset).reshape(w['shape']).copy()
            offset += n * 4
    return out


def fine_tune_cut(graph, first_trainable):
    """The single tensor feeding `first_trainable`: the frozen bottom ends there, the trainable top starts after it."""
    ins = graph.inbound[first_trainable]
    if len(ins) != 1:
        raise SystemExit(f'error: cannot cut {graph.name} before {first_trainable} (inputs {ins})')
    return ins[0]


def set_threads(n):
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)
