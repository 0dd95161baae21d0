"""Convert facenet-pytorch's MTCNN weights into facecls package data.

Reads ``facenet_pytorch/data/{pnet,rnet,onet}.pt`` (plain state dicts) straight out of the
MIT-licensed facenet-pytorch 2.6.0 wheel and writes one safetensors file with the keys prefixed
``pnet.``, ``rnet.``, ``onet.`` plus the licence beside it. facenet-pytorch is never imported or
installed; the wheel is only read as a zip. Get the wheel with::

    pip download facenet-pytorch==2.6.0 --no-deps -d /tmp/fp
    python scripts/convert_mtcnn.py /tmp/fp/facenet_pytorch-2.6.0-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file

NETS = ("pnet", "rnet", "onet")
OUT_DIR = Path(__file__).resolve().parents[1] / "src" / "facecls" / "weights"
LICENSE_FALLBACK = """MIT License

Copyright (c) 2019 Timothy Esler

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""
PROVENANCE = """
---------------------------------------------------------------------------------------------
mtcnn.safetensors holds the P-Net, R-Net and O-Net weights of facenet-pytorch 2.6.0
(facenet_pytorch/data/{pnet,rnet,onet}.pt, https://github.com/timesler/facenet-pytorch),
which are a conversion of the original MTCNN of Zhang, Zhang, Li and Qiao, "Joint Face
Detection and Alignment using Multi-task Cascaded Convolutional Networks", IEEE Signal
Processing Letters 2016 (https://github.com/kpzhang93/MTCNN_face_detection_alignment).
The tensors are unchanged; only the keys are prefixed pnet./rnet./onet. and the container is
safetensors. Regenerate with:

    pip download facenet-pytorch==2.6.0 --no-deps -d /tmp/fp
    python scripts/convert_mtcnn.py /tmp/fp/facenet_pytorch-2.6.0-py3-none-any.whl
"""


def read_state_dicts(wheel: Path) -> dict[str, torch.Tensor]:
    """All three nets' tensors from the wheel, keys prefixed with the net's name."""
    tensors: dict[str, torch.Tensor] = {}
    with zipfile.ZipFile(wheel) as archive:
        for net in NETS:
            raw = archive.read(f"facenet_pytorch/data/{net}.pt")
            # weights_only: a state dict needs no pickled code, and none is run.
            state = torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
            for key, value in state.items():
                tensors[f"{net}.{key}"] = value.detach().to(torch.float32).contiguous()
    return tensors


def read_license(wheel: Path) -> str:
    """The wheel's dist-info licence text, or the standard MIT text when it has none."""
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            stem = name.rsplit("/", 1)[-1]
            if ".dist-info/" in name and stem.upper().startswith("LICENSE"):
                return archive.read(name).decode("utf-8")
    return LICENSE_FALLBACK


def main(argv: list[str] | None = None) -> None:
    """Write ``mtcnn.safetensors`` and ``MTCNN-LICENSE.txt`` into the package's weights folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="facenet_pytorch-2.6.0-py3-none-any.whl")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    tensors = read_state_dicts(args.wheel)
    target = args.out / "mtcnn.safetensors"
    save_file(tensors, str(target), metadata={"source": "facenet-pytorch 2.6.0"})
    licence = read_license(args.wheel).rstrip("\n") + "\n" + PROVENANCE
    (args.out / "MTCNN-LICENSE.txt").write_text(licence, encoding="utf-8")
    print(f"{target}: {len(tensors)} tensors, {target.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
