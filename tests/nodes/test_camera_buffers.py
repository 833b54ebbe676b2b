"""Camera images are buffered only when fusion uses them, and bounded in bytes per camera."""

from __future__ import annotations

from sensor_msgs.msg import Image

from clip2scene_ros.nodes.camera_sync import CameraBuffer, LidarMasterSync


def _image(nbytes: int) -> Image:
    msg = Image(height=1, width=nbytes, encoding="mono8", step=nbytes)
    msg.data = bytes(nbytes)
    return msg


def test_buffer_is_bounded_in_bytes_and_keeps_the_newest():
    buf = CameraBuffer(maxlen=100, max_bytes=10_000)
    for i in range(50):
        buf.add(i * 100, _image(3_000))
    assert buf.bytes <= 10_000 and len(buf) == 3
    assert buf.closest(49 * 100, 0) is not None and buf.closest(0, 0) is None
    big = CameraBuffer(maxlen=100, max_bytes=1_000)
    big.add(1, _image(5_000))  # larger than the bound on its own: the newest image is still kept
    assert len(big) == 1
    big.add(0, _image(10))  # time went back: cleared, bytes reset
    assert big.bytes == 10


def test_without_fusion_nothing_is_buffered_but_silence_is_still_detected():
    sync = LidarMasterSync(["cam"], 0.05, buffer=False)
    for i in range(20):
        sync.add("cam", i, _image(1_000_000))
    assert sync.buffered_bytes() == {"cam": 0} and sync.match(10) == {}
    assert sync.silent_cameras(10.0) == {}  # it did arrive
    fused = LidarMasterSync(["cam"], 0.05, max_bytes=2_500_000)
    for i in range(20):
        fused.add("cam", i, _image(1_000_000))
    assert fused.buffered_bytes()["cam"] <= 2_500_000 and "cam" in fused.match(19)
