"""Camera rendering by rasterisation (numba): the same answer as casting one ray per pixel centre.

Open3D's ``cast_rays`` costs ~0.35 CPU-us per ray on our machines (~0.8 CPU-s for six 800x450
cameras), more than the whole 5 frames/s budget; primary camera rays all start at one point, so a
z-buffer rasteriser finds the same nearest triangle per pixel for a fraction of that.

Coverage is tested with homogeneous edge functions ``(a x b) . d`` of the pixel ray ``d`` against
the triangle's vertices in the optical frame: exact for triangles reaching behind the camera (no
clipping artefacts) and watertight (a shared edge evaluates to exactly opposite values in its two
triangles, and both include it). The depth is ``det(a, b, c) / (n . d)`` with ``d_z = 1``, i.e. the
ray parameter Open3D returns. Ties go to the lowest triangle index. ``shade`` then colours, labels
and depth-maps every pixel in one pass (the same model as the LiDAR's materials: pattern blend,
grain, sun + ambient, gloss, haze, sky with clouds, sensor noise).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from clip2scene_ros.sim import meshes as M

NEAR = 1e-3  # m: surfaces closer to the optical centre than this are not seen (no ray-cast analogue matters)

_P_ROAD, _P_TILES, _P_WINDOWS, _P_FOLIAGE = M.P_ROAD, M.P_TILES, M.P_WINDOWS, M.P_FOLIAGE
_P_HBANDS, _P_DIAG, _P_NOISE = M.P_HBANDS, M.P_DIAG, M.P_NOISE


@njit(nogil=True, cache=True, error_model="numpy")
def _wrap32(x: int) -> int:
    """Two's-complement int32 wrap-around of an int64 (numpy's int32 overflow semantics)."""
    return ((x + 0x80000000) & 0xFFFFFFFF) - 0x80000000


@njit(nogil=True, cache=True, error_model="numpy")
def noise3(x: float, y: float, z: float, freq: float) -> float:
    """render._noise for one point: blocky value noise in [0, 1) from an int32 hash of the cell.

    The cell index is taken in float64 (numpy's version multiplies in float32, which is 2.5x slower
    here); the two disagree only on points within rounding error of a cell boundary."""
    qx = _wrap32(int(math.floor(x * freq)))
    qy = _wrap32(int(math.floor(y * freq)))
    qz = _wrap32(int(math.floor(z * freq)))
    h = _wrap32(qx * 73856093) ^ _wrap32(qy * 19349663) ^ _wrap32(qz * 83492791)
    h = _wrap32((h ^ (h >> 13)) * 1274126177)
    return ((h >> 9) & 0xFFFF) * (1.0 / 65536.0)


@njit(nogil=True, cache=True, error_model="numpy")
def _frac(x: float) -> float:
    return x - math.floor(x)


@njit(nogil=True, cache=True, error_model="numpy")
def pattern_value(x: float, y: float, z: float, kind: int, f: float, a: float) -> float:
    """render.pattern_blend for one texture coordinate: blend factor in [0, 1]."""
    if kind == _P_ROAD:
        k = np.round(y / f)
        near = abs(y - k * f) < 0.075
        solid = k == 0 or abs(k) >= a
        dashed = _frac(x / 9.0) < 0.35
        if near and abs(k) <= a and (solid or dashed):
            return 0.75 + 0.25 * noise3(x, y, z, 9.0)
        return 0.0
    if kind == _P_TILES:
        u, v = _frac(x * f), _frac((y + z) * f)
        return 1.0 if (u < 0.07 or v < 0.07) else 0.0
    if kind == _P_WINDOWS:
        u = _frac((x + y) * f)
        v = _frac(z / a)
        return 1.0 if (u > 0.25 and u < 0.75 and v > 0.3 and v < 0.8 and z > 0.8) else 0.0
    if kind == _P_FOLIAGE:
        return 0.6 * noise3(x, y, z, f) + 0.4 * noise3(x + 0.37, y + 0.37, z + 0.37, f * 3.7)
    if kind == _P_HBANDS:
        return 1.0 if _frac(z * f) < 0.5 else 0.0
    if kind == _P_DIAG:
        return 1.0 if _frac((x + y + z) * f) < 0.5 else 0.0
    if kind == _P_NOISE:
        return noise3(x, y, z, f)
    return 0.0  # P_PLAIN


@njit(nogil=True, cache=True, error_model="numpy")
def rasterize(
    verts: np.ndarray,  # float32 [V,3] road frame
    tris: np.ndarray,  # int32/int64 [T,3]
    rot: np.ndarray,  # float64 [3,3] road <- optical
    origin: np.ndarray,  # float64 [3] optical centre in the road frame
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    width: int,
    height: int,
    depth: np.ndarray,  # float64 [H*W] out: ray parameter (= optical depth), inf on a miss
    tri_id: np.ndarray,  # int32 [H*W] out: nearest triangle, -1 on a miss
) -> None:
    nv = verts.shape[0]
    cv = np.empty((nv, 3))
    for k in range(nv):
        px, py, pz = verts[k, 0] - origin[0], verts[k, 1] - origin[1], verts[k, 2] - origin[2]
        for r in range(3):  # optical <- road is rot.T
            cv[k, r] = rot[0, r] * px + rot[1, r] * py + rot[2, r] * pz
    depth[:] = np.inf
    tri_id[:] = -1
    poly = np.empty((6, 3))
    for t in range(tris.shape[0]):
        i0, i1, i2 = tris[t, 0], tris[t, 1], tris[t, 2]
        ax, ay, az = cv[i0, 0], cv[i0, 1], cv[i0, 2]
        bx, by, bz = cv[i1, 0], cv[i1, 1], cv[i1, 2]
        qx, qy, qz = cv[i2, 0], cv[i2, 1], cv[i2, 2]
        if az <= NEAR and bz <= NEAR and qz <= NEAR:
            continue
        # screen bounding box of the part in front of z = NEAR (triangle clipped against that plane)
        n = 0
        for e in range(3):
            j0 = tris[t, e]
            j1 = tris[t, (e + 1) % 3]
            z0, z1 = cv[j0, 2], cv[j1, 2]
            if z0 > NEAR:
                poly[n, 0], poly[n, 1], poly[n, 2] = cv[j0, 0], cv[j0, 1], z0
                n += 1
            if (z0 > NEAR) != (z1 > NEAR):
                s = (NEAR - z0) / (z1 - z0)
                poly[n, 0] = cv[j0, 0] + s * (cv[j1, 0] - cv[j0, 0])
                poly[n, 1] = cv[j0, 1] + s * (cv[j1, 1] - cv[j0, 1])
                poly[n, 2] = NEAR
                n += 1
        umin = vmin = np.inf
        umax = vmax = -np.inf
        for k in range(n):
            u = fx * poly[k, 0] / poly[k, 2] + cx
            v = fy * poly[k, 1] / poly[k, 2] + cy
            umin, umax = min(umin, u), max(umax, u)
            vmin, vmax = min(vmin, v), max(vmax, v)
        j_lo = max(int(math.floor(umin)), 0)
        j_hi = min(int(math.ceil(umax)), width - 1)
        i_lo = max(int(math.floor(vmin)), 0)
        i_hi = min(int(math.ceil(vmax)), height - 1)
        if j_lo > j_hi or i_lo > i_hi:
            continue
        # edge normals a x b, b x c, c x a; E(d) = n_e . d with d = ((j - cx)/fx, (i - cy)/fy, 1)
        e0x, e0y, e0z = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx
        e1x, e1y, e1z = by * qz - bz * qy, bz * qx - bx * qz, bx * qy - by * qx
        e2x, e2y, e2z = qy * az - qz * ay, qz * ax - qx * az, qx * ay - qy * ax
        det = e1x * ax + e1y * ay + e1z * az  # (b x c) . a
        if det == 0.0:
            continue  # plane through the optical centre: seen edge-on
        sg = 1.0 if det > 0.0 else -1.0
        a0, b0, c0 = sg * e0x / fx, sg * e0y / fy, sg * (e0z - e0x * cx / fx - e0y * cy / fy)
        a1, b1, c1 = sg * e1x / fx, sg * e1y / fy, sg * (e1z - e1x * cx / fx - e1y * cy / fy)
        a2, b2, c2 = sg * e2x / fx, sg * e2y / fy, sg * (e2z - e2x * cx / fx - e2y * cy / fy)
        adet = sg * det
        for i in range(i_lo, i_hi + 1):
            # columns where every edge function is >= 0, widened by a pixel against rounding; the
            # exact per-pixel test below decides
            lo, hi = float(j_lo), float(j_hi)
            for ea, eb, ec in ((a0, b0, c0), (a1, b1, c1), (a2, b2, c2)):
                r0 = eb * i + ec
                if ea > 0.0:
                    lo = max(lo, -r0 / ea - 1.0)
                elif ea < 0.0:
                    hi = min(hi, -r0 / ea + 1.0)
                elif r0 < 0.0:
                    hi = -1.0
            if lo > hi:
                continue
            row = i * width
            for j in range(int(math.ceil(lo)), int(math.floor(hi)) + 1):
                w0 = a0 * j + b0 * i + c0
                if w0 < 0.0:
                    continue
                w1 = a1 * j + b1 * i + c1
                if w1 < 0.0:
                    continue
                w2 = a2 * j + b2 * i + c2
                if w2 < 0.0:
                    continue
                s = w0 + w1 + w2
                if s <= 0.0:
                    continue
                z = adet / s
                p = row + j
                if z < depth[p] and z > NEAR:
                    depth[p] = z
                    tri_id[p] = t


@njit(nogil=True, cache=True, error_model="numpy")
def shade(
    depth: np.ndarray,  # float64 [H*W] from rasterize
    tri_id: np.ndarray,  # int32 [H*W]
    rot: np.ndarray,  # float64 [3,3] road <- optical
    origin: np.ndarray,  # float64 [3]
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    width: int,
    normals: np.ndarray,  # float32 [T,3] unit, road frame
    owner: np.ndarray,  # int32 [T] agent index or -1
    inv_agent: np.ndarray,  # float64 [K,4,4] agent <- road
    pattern: np.ndarray,  # uint8 [T]
    freq: np.ndarray,  # float32 [T]
    param: np.ndarray,  # float32 [T]
    colors: np.ndarray,  # float32 [T,6] colour1, colour2 - colour1
    gloss: np.ndarray,  # float32 [T]
    label: np.ndarray,  # uint8 [T]
    instance: np.ndarray,  # int32 [T]
    light: np.ndarray,  # float64 [12]: sun dir 3, horizon 3, zenith 3, sun, ambient, exposure
    noise_tile: np.ndarray,  # float32 [th,tw,3]
    noise_y: int,
    noise_x: int,
    image: np.ndarray,  # uint8 [H*W,3] out
    labels: np.ndarray,  # uint8 [H*W] out (0 = sky)
    depth_out: np.ndarray,  # float32 [H*W] out (0 = sky)
    instances: np.ndarray,  # int32 [H*W] out
) -> None:
    sx, sy, sz = light[0], light[1], light[2]
    hor0, hor1, hor2 = light[3], light[4], light[5]
    zen0, zen1, zen2 = light[6], light[7], light[8]
    sun, ambient, gain = light[9], light[10], 255.0 * light[11]
    th, tw = noise_tile.shape[0], noise_tile.shape[1]
    height = depth.shape[0] // width
    # scalars, not array loads, in the pixel loop (the outputs could alias the inputs as far as LLVM knows)
    r00, r10, r20 = rot[0, 0], rot[1, 0], rot[2, 0]
    o0, o1, o2 = origin[0], origin[1], origin[2]
    for i in range(height):
        oy = (i - cy) / fy  # optical ray (ox, oy, 1)
        rx0, ry0, rz0 = rot[0, 1] * oy + rot[0, 2], rot[1, 1] * oy + rot[1, 2], rot[2, 1] * oy + rot[2, 2]
        ty = (i + noise_y) % th
        tx = noise_x % tw
        for j in range(width):
            p = i * width + j
            ox = (j - cx) / fx
            dx, dy, dz = r00 * ox + rx0, r10 * ox + ry0, r20 * ox + rz0
            inv_len = 1.0 / math.sqrt(dx * dx + dy * dy + dz * dz)
            vx, vy, vz = dx * inv_len, dy * inv_len, dz * inv_len  # unit view direction
            t = tri_id[p]
            if t >= 0:
                tz = depth[p]
                px, py, pz = o0 + dx * tz, o1 + dy * tz, o2 + dz * tz
                k = owner[t]
                if k >= 0:  # agents carry their texture with them
                    m_ = inv_agent[k]
                    px, py, pz = (
                        m_[0, 0] * px + m_[0, 1] * py + m_[0, 2] * pz + m_[0, 3],
                        m_[1, 0] * px + m_[1, 1] * py + m_[1, 2] * pz + m_[1, 3],
                        m_[2, 0] * px + m_[2, 1] * py + m_[2, 2] * pz + m_[2, 3],
                    )
                m = pattern_value(px, py, pz, pattern[t], freq[t], param[t])
                grain = 0.88 + 0.24 * noise3(px, py, pz, 14.0)
                nx, ny, nz = normals[t, 0], normals[t, 1], normals[t, 2]
                if nx * dx + ny * dy + nz * dz > 0.0:  # seen from behind: light the side we see
                    nx, ny, nz = -nx, -ny, -nz
                lg = (ambient * (0.8 + 0.2 * nz) + sun * max(nx * sx + ny * sy + nz * sz, 0.0)) * grain
                r = colors[t, 0] + colors[t, 3] * m
                g = colors[t, 1] + colors[t, 4] * m
                b = colors[t, 2] + colors[t, 5] * m
                r, g, b = r * lg, g * lg, b * lg
                gl = gloss[t]
                if gl > 0.0:
                    vn = 2.0 * (vx * nx + vy * ny + vz * nz)
                    fx_, fy_, fz_ = vx - vn * nx, vy - vn * ny, vz - vn * nz  # mirror direction
                    s5 = max(fx_ * sx + fy_ * sy + fz_ * sz, 0.0)
                    s5 = s5 * s5 * s5 * s5 * s5
                    spec = s5 * s5 * s5 * s5 * sun  # ** 20
                    hz = min(max(fz_ * 2.5, 0.0), 1.0)
                    r += gl * (0.25 * (hor0 + (zen0 - hor0) * hz) + spec)
                    g += gl * (0.25 * (hor1 + (zen1 - hor1) * hz) + spec)
                    b += gl * (0.25 * (hor2 + (zen2 - hor2) * hz) + spec)
                haze = 1.0 - math.exp(tz / inv_len * (-1.0 / 400.0))
                r = (r + (hor0 - r) * haze) * gain
                g = (g + (hor1 - g) * haze) * gain
                b = (b + (hor2 - b) * haze) * gain
                labels[p] = label[t]
                instances[p] = instance[t]
                depth_out[p] = tz
            else:  # sky: horizon-to-zenith gradient, sun glow, blocky clouds
                h = min(max(vz * 2.5, 0.0), 1.0)
                gw = max(vx * sx + vy * sy + vz * sz, 0.0)
                gw = gw * gw * gw
                gw = gw * gw
                gw = gw * gw
                gw = gw * gw * 0.5  # ** 24, halved
                q = max(vz, 0.05)
                cloud = noise3(vx / q, vy / q, vz / q, 1.3)
                cloud = min(max((cloud - 0.55) * 2.5, 0.0), 1.0) * min(max(vz * 6.0, 0.0), 1.0)
                keep, add = 1.0 - 0.6 * cloud, 0.6 * cloud * 0.95
                r = ((hor0 + (zen0 - hor0) * h) * keep + add + gw) * 255.0
                g = ((hor1 + (zen1 - hor1) * h) * keep + add + gw) * 255.0
                b = ((hor2 + (zen2 - hor2) * h) * keep + add + gw) * 255.0
                labels[p] = 0
                instances[p] = 0
                depth_out[p] = 0.0
            image[p, 0] = np.uint8(min(max(r + noise_tile[ty, tx, 0] + 0.5, 0.0), 255.0))
            image[p, 1] = np.uint8(min(max(g + noise_tile[ty, tx, 1] + 0.5, 0.0), 255.0))
            image[p, 2] = np.uint8(min(max(b + noise_tile[ty, tx, 2] + 0.5, 0.0), 255.0))
            tx += 1
            if tx == tw:
                tx = 0
