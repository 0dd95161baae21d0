"""Pack what ``benchmarks/gpu_check.sh`` needs into one small folder for a lent GPU machine.

The device machine has no ``../shared``, and what travels with the working tree is limited to
64 MiB, so this writes (default ``device_data/``, git-ignored):

* ``lfw8/<identity>/<file>.webp``: the LFW-8 images of the benchmark split, resized whole to
  ``--size`` px (112, the size the check trains at) as WebP (at equal quality a third smaller
  than JPEG, which FaceNet's 45 MiB of float16 weights make necessary);
* ``lfw-benchmark-splits.csv``: the split file's LFW-8 rows, naming the packed files;
* ``facenet.safetensors``: the CASIA-WebFace FaceNet backbone in float16, without its 10,575-way
  training head (facecls never loads that head);
* ``mobilenet_v2.safetensors``: torchvision's ImageNet MobileNetV2 in float16, without its
  1000-way head (loaded with ``--weights`` instead of a download);
* ``manifest.json``: the sources, counts and sizes.

    python benchmarks/pack_device_data.py                  # from ../shared into device_data/
    python benchmarks/pack_device_data.py --out /tmp/dd --size 112
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import tarfile
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import _paths
from facecls.models.facenet import FOREIGN_HEAD_PREFIX, WEIGHTS_FILE

REPO = Path(__file__).resolve().parents[1]
MOBILENET_FILE = "mobilenet_v2-b0353104.pth"
LIMIT_MIB = 62  # leaves room for the working tree (1 MiB) within the 64 MiB that travels


def _identity_file(path: str) -> str:
    """``identity/file``: how facecls's split files name an image in any layout."""
    return "/".join(path.replace("\\", "/").split("/")[-2:])


def pack_images(
    archive: Path, splits: Path, out: Path, size: int, quality: int, column: str = "lfw8",
    suffix: str = ".webp",
) -> int:  # fmt: skip
    """Resize the images that have a ``column`` split to ``size`` px files of ``suffix``'s
    format, and write their rows of ``splits`` beside ``out``; returns how many."""
    with splits.open(newline="") as f:
        rows = [row for row in csv.DictReader(f) if (row.get(column) or "").strip()]
    wanted = {_identity_file(row["path"]) for row in rows}
    out.mkdir(parents=True, exist_ok=True)
    with (out.parent / splits.name).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "identity", column], lineterminator="\n")
        writer.writeheader()
        for row in rows:
            path = str(Path(row["path"]).with_suffix(suffix))
            writer.writerow({"path": path, "identity": row["identity"], column: row[column]})
    written = 0
    with tarfile.open(archive) as tar:
        for member in tar:
            key = _identity_file(member.name)
            if not member.isfile() or key not in wanted:
                continue
            data = tar.extractfile(member)
            assert data is not None
            image = Image.open(io.BytesIO(data.read())).convert("RGB")
            image = image.resize((size, size), Image.Resampling.LANCZOS)
            target = (out / key).with_suffix(suffix)
            target.parent.mkdir(parents=True, exist_ok=True)
            image.save(target, quality=quality)  # the format follows the suffix
            written += 1
    if written != len(wanted):
        raise SystemExit(f"{archive}: found {written} of the {len(wanted)} {column} images")
    return written


def half_weights(state: dict[str, torch.Tensor], drop: str, dest: Path) -> int:
    """Save ``state`` without the keys under ``drop``, floating tensors as float16."""
    kept = {
        k: (v.half() if v.is_floating_point() else v).contiguous()
        for k, v in state.items()
        if not k.startswith(drop)
    }
    save_file(kept, str(dest))
    return len(kept)


def folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def pack(shared: Path, out: Path, size: int = 112, quality: int = 80) -> dict:
    """Write the device folder (see the module doc) and return its manifest."""
    datasets, weights = shared / "datasets", shared / "weights"
    count = pack_images(
        datasets / "lfw-deepfunneled.tgz", datasets / "lfw-benchmark-splits.csv",
        out / "lfw8", size, quality,
    )  # fmt: skip
    facenet = load_file(str(weights / WEIGHTS_FILE))
    half_weights(facenet, FOREIGN_HEAD_PREFIX, out / "facenet.safetensors")
    mobilenet = torch.load(weights / MOBILENET_FILE, map_location="cpu", weights_only=True)
    half_weights(mobilenet, "classifier.1.", out / "mobilenet_v2.safetensors")
    manifest = {
        "images": count, "image_size": size, "webp_quality": quality,
        "sources": [str(datasets / "lfw-deepfunneled.tgz"), str(weights / WEIGHTS_FILE),
                    str(weights / MOBILENET_FILE)],
        "mib": round(folder_mib(out), 1),
    }  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--shared", type=Path, default=_paths.shared(), help="the read-only shared folder"
    )
    p.add_argument("--out", type=Path, default=REPO / "device_data")
    p.add_argument("--size", type=int, default=112, help="side of the packed images, px")
    p.add_argument("--quality", type=int, default=80, help="WebP quality")
    args = p.parse_args()
    manifest = pack(args.shared, args.out, args.size, args.quality)
    print(json.dumps(manifest, indent=2))
    if manifest["mib"] > LIMIT_MIB:
        raise SystemExit(f"{args.out}: {manifest['mib']} MiB, over {LIMIT_MIB}: lower --quality")


if __name__ == "__main__":
    main()
