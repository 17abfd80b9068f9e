#!/usr/bin/env python3
"""PyTorch eager reference for `ddpm bench`: the same U-Net (docs: the
architecture in shared/docs/unet.md), the same training step (noise at a
random step, epsilon-MSE loss, backward, Adam 1e-4), timed the same way
(median of N steps after one warm-up, synchronising before reading the clock).

    python3 scripts/torch_unet_bench.py --preset flowers64 --batch 32 --steps 10
    python3 scripts/torch_unet_bench.py --precision bf16       # autocast
    python3 scripts/torch_unet_bench.py --tf32 off             # strict fp32

    python3 scripts/torch_unet_bench.py --device cpu --threads 2 --preset tiny
    python3 scripts/torch_unet_bench.py --device cpu --channels-last     # NHWC

`--tf32 default` keeps PyTorch's defaults (cuDNN convolutions may use TF32,
matrix products may not); `on` allows both, `off` neither. On a CUDA device
`cudnn.benchmark` is on (what a user picks for speed). On the CPU, peak
resident memory (ru_maxrss) is reported instead of allocator statistics.
Prints one JSON line, like `ddpm bench --json`.
"""
import argparse
import json
import math
import platform
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    # image size, C, mult, R, groups, dropout
    "tiny": (32, 32, (1, 2, 2), 1, 8, 0.1),
    "flowers64": (64, 64, (1, 2, 4, 4), 2, 32, 0.1),
    "flowers160": (160, 96, (1, 2, 2, 4, 4), 2, 32, 0.1),
    "cpu32": (32, 32, (1, 2, 2, 2), 1, 8, 0.0),
}


def group_norm(groups, c):
    return nn.GroupNorm(min(groups, c), c, eps=1e-5)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, time_dim, groups, dropout):
        super().__init__()
        self.norm1 = group_norm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_scale = nn.Linear(time_dim, cout)
        self.time_shift = nn.Linear(time_dim, cout)
        self.norm2 = group_norm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, t):
        y = self.conv1(F.silu(self.norm1(x)))
        y = y * (self.time_scale(t)[:, :, None, None] + 1) + self.time_shift(t)[:, :, None, None]
        y = self.conv2(self.dropout(F.silu(self.norm2(y))))
        return y + (self.skip(x) if self.skip is not None else x)


class UNet(nn.Module):
    def __init__(self, c, mult, r, groups, dropout):
        super().__init__()
        self.c = c
        f = 4 * c
        self.time_mlp = nn.Sequential(nn.Linear(c, f), nn.SiLU(), nn.Linear(f, f))
        self.conv_in = nn.Conv2d(3, c, 3, padding=1)
        chans = [c * m for m in mult]
        self.down = nn.ModuleList()
        prev = c
        for ci in chans:
            self.down.append(nn.ModuleList([ResBlock(prev if j == 0 else ci, ci, f, groups, dropout) for j in range(r)]))
            prev = ci
        self.middle = nn.ModuleList([ResBlock(prev, prev, f, groups, dropout) for _ in range(2)])
        self.up = nn.ModuleList()
        cx = prev
        for ci in reversed(chans):
            self.up.append(nn.ModuleList([ResBlock(cx + ci if j == 0 else ci, ci, f, groups, dropout) for j in range(r)]))
            cx = ci
        self.norm_out = group_norm(groups, c)
        self.conv_out = nn.Conv2d(c, 3, 3, padding=1)

    def time_features(self, t):
        half = self.c // 2
        k = torch.arange(half, device=t.device, dtype=torch.float32)
        freqs = torch.exp(-math.log(10000.0) * k / half)
        args = t.float()[:, None] * freqs[None]
        return torch.cat([torch.sin(args), torch.cos(args)], dim=1)

    def forward(self, x, t):
        temb = F.silu(self.time_mlp(self.time_features(t)))
        x = self.conv_in(x)
        skips = []
        for level in self.down:
            for block in level:
                x = block(x, temb)
            skips.append(x)
            x = F.avg_pool2d(x, 2)
        for block in self.middle:
            x = block(x, temb)
        for level in self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = torch.cat([x, skips.pop()], dim=1)
            for block in level:
                x = block(x, temb)
        return self.conv_out(F.silu(self.norm_out(x)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="flowers64", choices=PRESETS)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--precision", default="f32", choices=["f32", "bf16", "f16"])
    ap.add_argument("--tf32", default="off", choices=["default", "on", "off"])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (--device cpu)")
    ap.add_argument("--channels-last", action="store_true", help="NHWC activations and weights")
    args = ap.parse_args()

    if args.tf32 != "default":
        torch.backends.cuda.matmul.allow_tf32 = args.tf32 == "on"
        torch.backends.cudnn.allow_tf32 = args.tf32 == "on"
    cuda = args.device == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format

    def sync():
        if cuda:
            torch.cuda.synchronize()
    size, c, mult, r, groups, dropout = PRESETS[args.preset]
    torch.manual_seed(0)
    model = UNet(c, mult, r, groups, dropout).to(dev, memory_format=fmt).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0).float().to(dev)
    x0 = torch.randn(args.batch, 3, size, size, device=dev).clamp(-1, 1).contiguous(memory_format=fmt)
    half = {"bf16": torch.bfloat16, "f16": torch.float16}.get(args.precision)
    scaler = torch.amp.GradScaler(args.device) if args.precision == "f16" else None

    def train_step():
        t = torch.randint(0, 1000, (args.batch,), device=dev)
        noise = torch.randn_like(x0)
        ab = alpha_bar[t][:, None, None, None]
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        with torch.autocast(args.device, dtype=half, enabled=half is not None):
            eps = model(xt, t)
        loss = F.mse_loss(eps.float(), noise)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        return loss

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(args.steps + 1):
        sync()
        start = time.perf_counter()
        train_step().item()
        sync()
        if i > 0:
            times.append(time.perf_counter() - start)
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        reserved = torch.cuda.memory_reserved()
    else:
        # Linux reports ru_maxrss in KiB: the peak resident memory so far.
        peak = reserved = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    model.eval()
    xs = torch.randn(16, 3, size, size, device=dev).contiguous(memory_format=fmt)
    ts = torch.full((16,), 500, device=dev)
    sample_times = []
    with torch.no_grad(), torch.autocast(args.device, dtype=half, enabled=half is not None):
        for i in range(args.steps + 1):
            sync()
            start = time.perf_counter()
            model(xs, ts).float().sum().item()
            if i > 0:
                sample_times.append(time.perf_counter() - start)

    step = statistics.median(times)
    sample = statistics.median(sample_times)
    print(json.dumps({
        "impl": f"pytorch {torch.__version__} eager",
        "preset": args.preset,
        "device": torch.cuda.get_device_name() if cuda else f"{platform.processor() or platform.machine()}, {args.threads} threads",
        "channels_last": args.channels_last,
        "precision": args.precision,
        "tf32": args.tf32,
        "batch": args.batch,
        "steps": args.steps,
        "train_step_s": step,
        "train_images_per_s": args.batch / step,
        "sample_forward_s": sample,
        "sample_images_per_s": 16 / sample,
        "peak_allocated_bytes": peak,
        "reserved_bytes": reserved,
        "parameters": sum(p.numel() for p in model.parameters()),
    }))


if __name__ == "__main__":
    main()
