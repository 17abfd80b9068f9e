"""Writes N images of Gaussian noise as PNG files: the "ceiling" of the
sample-quality table in BENCHMARKS.md (what a sampler that learned nothing
would paint). Each pixel, in the [-1, 1] range the models use, is a
standard normal draw clamped to [-1, 1], like the sampler's starting noise.

    python3 scripts/noise_images.py OUT_DIR [N] [SIZE] [SEED]
"""
import os
import random
import struct
import sys
import zlib


def png(path, size, rows):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes(r) for r in rows)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw)))
        f.write(chunk(b"IEND", b""))


def main():
    out = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 0)
    os.makedirs(out, exist_ok=True)
    to_byte = lambda z: round((max(-1.0, min(1.0, z)) + 1.0) * 127.5)
    for i in range(n):
        rows = [[to_byte(rng.gauss(0.0, 1.0)) for _ in range(3 * size)] for _ in range(size)]
        png(os.path.join(out, f"noise_{i:04}.png"), size, rows)


if __name__ == "__main__":
    main()
