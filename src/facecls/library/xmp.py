"""XMP sidecars with the named faces of a photo, in the Metadata Working Group's region schema.

``mwg-rs:Regions`` is what digiKam, Lightroom, darktable, Immich and PhotoPrism read for face
tags; the names are also listed as ``Iptc4xmpExt:PersonInImage``. A sidecar is a separate file
(``photo.jpg.xmp`` beside the photo, digiKam's and darktable's naming, or the same path under a
folder of the user's choice): the photo itself is never opened for writing.

Geometry. Per the MWG guidelines (2.0, §5.9), a region applies to the *stored* image: its
``AppliedToDimensions`` are the stored pixel size, and a reader applies the Exif orientation to
the regions as it does to the pixels. facecls finds faces in the photo as displayed (orientation
applied), so boxes are mapped back here. An area is the region's centre and size as shares of
the stored width and height (``stArea:unit="normalized"``).

A sidecar that is already there and was not written by facecls (no ``xmp:CreatorTool`` of
facecls) is left alone and reported: it may hold a person's own edits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from PIL import Image

from facecls.atomic import write_text

CREATOR = "facecls"
_ORIENTATION_TAG = 0x0112
# How many bytes of an existing sidecar are read to see whether facecls wrote it.
_SNIFF = 4096


@dataclass(frozen=True)
class FaceRegion:
    """A named face: ``box`` is ``(x1, y1, x2, y2)`` in pixels of the photo as displayed."""

    name: str
    box: tuple[float, float, float, float]


def stored_geometry(photo: Path) -> tuple[int, int, int]:
    """``(width, height, orientation)`` of the stored image, from the file's header only."""
    with Image.open(photo) as image:
        orientation = int(image.getexif().get(_ORIENTATION_TAG, 1) or 1)
        return image.width, image.height, orientation if 1 <= orientation <= 8 else 1


def displayed_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """The size the photo shows at: orientations 5-8 turn it a quarter."""
    return (height, width) if orientation >= 5 else (width, height)


def _to_stored(x: float, y: float, orientation: int) -> tuple[float, float]:
    """A normalised point of the displayed photo in the stored one (the inverse of
    Pillow's ``ImageOps.exif_transpose``)."""
    return {
        1: (x, y),
        2: (1 - x, y),
        3: (1 - x, 1 - y),
        4: (x, 1 - y),
        5: (y, x),
        6: (y, 1 - x),
        7: (1 - y, 1 - x),
        8: (1 - y, x),
    }[orientation]


def stored_area(
    box: Sequence[float], width: int, height: int, orientation: int
) -> tuple[float, float, float, float]:
    """``(x, y, w, h)``: the centre and size of a displayed ``box`` as shares of the stored
    ``width`` x ``height`` image, clipped to the photo."""
    shown_w, shown_h = displayed_size(width, height, orientation)
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = sorted((min(max(x1 / shown_w, 0.0), 1.0), min(max(x2 / shown_w, 0.0), 1.0)))
    y1, y2 = sorted((min(max(y1 / shown_h, 0.0), 1.0), min(max(y2 / shown_h, 0.0), 1.0)))
    cx, cy = _to_stored((x1 + x2) / 2, (y1 + y2) / 2, orientation)
    w, h = x2 - x1, y2 - y1
    return (cx, cy, h, w) if orientation >= 5 else (cx, cy, w, h)


def sidecar_xml(regions: Sequence[FaceRegion], width: int, height: int, orientation: int) -> str:
    """The XMP packet of ``regions`` for a stored ``width`` x ``height`` photo."""
    items = []
    for region in regions:
        x, y, w, h = stored_area(region.box, width, height, orientation)
        items.append(
            "      <rdf:li rdf:parseType=\"Resource\">\n"
            f"       <mwg-rs:Name>{escape(region.name)}</mwg-rs:Name>\n"
            "       <mwg-rs:Type>Face</mwg-rs:Type>\n"
            "       <mwg-rs:Area rdf:parseType=\"Resource\">\n"
            f"        <stArea:x>{x:.6f}</stArea:x>\n"
            f"        <stArea:y>{y:.6f}</stArea:y>\n"
            f"        <stArea:w>{w:.6f}</stArea:w>\n"
            f"        <stArea:h>{h:.6f}</stArea:h>\n"
            "        <stArea:unit>normalized</stArea:unit>\n"
            "       </mwg-rs:Area>\n"
            "      </rdf:li>\n"
        )  # fmt: skip
    names = sorted({r.name for r in regions})
    people = "".join(f"     <rdf:li>{escape(name)}</rdf:li>\n" for name in names)
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:xmp="http://ns.adobe.com/xap/1.0/"\n'
        '    xmlns:mwg-rs="http://www.metadataworkinggroup.com/schemas/regions/"\n'
        '    xmlns:stDim="http://ns.adobe.com/xap/1.0/sType/Dimensions#"\n'
        '    xmlns:stArea="http://ns.adobe.com/xmp/sType/Area#"\n'
        '    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"\n'
        f"    xmp:CreatorTool={quoteattr(CREATOR)}>\n"
        '   <mwg-rs:Regions rdf:parseType="Resource">\n'
        '    <mwg-rs:AppliedToDimensions rdf:parseType="Resource">\n'
        f"     <stDim:w>{width}</stDim:w>\n"
        f"     <stDim:h>{height}</stDim:h>\n"
        "     <stDim:unit>pixel</stDim:unit>\n"
        "    </mwg-rs:AppliedToDimensions>\n"
        "    <mwg-rs:RegionList>\n"
        "     <rdf:Bag>\n"
        f"{''.join(items)}"
        "     </rdf:Bag>\n"
        "    </mwg-rs:RegionList>\n"
        "   </mwg-rs:Regions>\n"
        "   <Iptc4xmpExt:PersonInImage>\n"
        "    <rdf:Bag>\n"
        f"{people}"
        "    </rdf:Bag>\n"
        "   </Iptc4xmpExt:PersonInImage>\n"
        "  </rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>\n'
    )


def sidecar_path(photo: Path, out: Path | None = None, root: Path | None = None) -> Path:
    """``photo.jpg.xmp`` beside the photo, or at the photo's path relative to ``root`` under
    ``out``."""
    name = photo.name + ".xmp"
    if out is None:
        return photo.with_name(name)
    relative = photo.parent.relative_to(root) if root is not None else Path()
    return out / relative / name


def written_by_facecls(sidecar: Path) -> bool:
    """Whether an existing sidecar is one facecls wrote (so it may be replaced)."""
    with sidecar.open("rb") as f:
        head = f.read(_SNIFF).decode("utf-8", "replace")
    return f'xmp:CreatorTool="{CREATOR}"' in head


def write_sidecar(
    photo: Path,
    regions: Sequence[FaceRegion],
    sidecar: Path,
    shown: tuple[int, int] | None = None,
) -> str | None:
    """Write the sidecar of ``photo`` atomically; ``None`` when written, else why not (an
    existing sidecar facecls did not write, a photo that cannot be read, or one whose displayed
    size is no longer ``shown``, the size its faces were found at)."""
    if sidecar.exists() and not written_by_facecls(sidecar):
        return "a sidecar facecls did not write is already there (left as it is)"
    try:
        width, height, orientation = stored_geometry(photo)
    except OSError as error:
        return f"cannot read the photo ({error})"
    if shown is not None and displayed_size(width, height, orientation) != tuple(shown):
        return "the photo changed since it was indexed (index it again)"
    sidecar.parent.mkdir(parents=True, exist_ok=True)
    write_text(sidecar, sidecar_xml(regions, width, height, orientation))
    return None
