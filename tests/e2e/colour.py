"""Colours for the overlay checks: DICOM CIELab to sRGB, and hue comparison.

Written out here rather than taken from highdicom, which the node uses to write the colours:
the check should not share the writer's conversion.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

#: CIE standard illuminant D65, the white point of DICOM's CIELab (PS3.3 C.10.7.1.1) and sRGB.
_D65 = (0.95047, 1.0, 1.08883)
#: XYZ to linear sRGB (IEC 61966-2-1).
_XYZ_TO_LINEAR_SRGB = (
    (3.2404542, -1.5371385, -0.4985314),
    (-0.9692660, 1.8760108, 0.0415560),
    (0.0556434, -0.2040259, 1.0572252),
)


def dicom_cielab_to_srgb(value: Sequence[int]) -> tuple[int, int, int]:
    """sRGB 0-255 of a Recommended Display CIELab Value (0062,000D).

    DICOM scales L* from 0-100 and a*, b* from -128-127 onto 0-65535 (PS3.3 C.10.7.1.1).
    """
    l_star = value[0] / 65535 * 100
    a_star = value[1] / 65535 * 255 - 128
    b_star = value[2] / 65535 * 255 - 128
    fy = (l_star + 16) / 116
    fx = fy + a_star / 500
    fz = fy - b_star / 200

    def inverse(t: float) -> float:
        return t**3 if t > 6 / 29 else 3 * (6 / 29) ** 2 * (t - 4 / 29)

    xyz = (_D65[0] * inverse(fx), _D65[1] * inverse(fy), _D65[2] * inverse(fz))
    rgb = []
    for row in _XYZ_TO_LINEAR_SRGB:
        linear = sum(m * c for m, c in zip(row, xyz, strict=True))
        linear = min(1.0, max(0.0, linear))
        encoded = 12.92 * linear if linear <= 0.0031308 else 1.055 * linear ** (1 / 2.4) - 0.055
        rgb.append(round(encoded * 255))
    return rgb[0], rgb[1], rgb[2]


def hue_and_saturation(rgb: Sequence[float]) -> tuple[float, float]:
    """HSV hue in degrees (0-360) and saturation (0-1) of an sRGB 0-255 colour."""
    hue, saturation, _ = colorsys.rgb_to_hsv(*(channel / 255 for channel in rgb[:3]))
    return hue * 360, saturation


def hue_distance(first: float, second: float) -> float:
    """Angle between two hues in degrees, 0-180."""
    difference = abs(first - second) % 360
    return min(difference, 360 - difference)
