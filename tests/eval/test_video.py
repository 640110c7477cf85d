"""MP4 writing: valid H.264 file, frame count, orientation kept (no flip), overlay outside the image."""
import imageio.v3 as iio
import numpy as np

from eval.video import BAND, VideoWriter, overlay, video_name, write_mp4


def frames(t=12, size=224):
    f = np.full((t, size, size, 3), 90, dtype=np.uint8)
    f[:, :40, :40] = (255, 0, 0)  # red marker top-left
    f[:, -40:, -40:] = (0, 0, 255)  # blue marker bottom-right
    return f


def test_mp4_is_valid_with_all_frames_right_side_up(tmp_path):
    path = tmp_path / "v.mp4"
    write_mp4(path, overlay(frames(), ["pick up the bowl", "N=5"], success_step=10))
    assert path.read_bytes()[4:8] == b"ftyp"
    video = iio.imread(path)  # decodes every frame through ffmpeg
    assert video.shape == (12, 224 + BAND, 224, 3)
    top_left, bottom_right = video[0, 5:35, 5:35].mean((0, 1)), video[0, 189:219, 189:219].mean((0, 1))
    assert top_left[0] > 200 and top_left[2] < 60  # red stayed at the top-left: not flipped
    assert bottom_right[2] > 200 and bottom_right[0] < 60
    assert np.abs(video[:, :224].astype(int) - frames().astype(int)).mean() < 6  # image itself untouched
    assert video[0, 224:].max() > 200  # overlay text in the band below


def test_writer_thread_and_names(tmp_path):
    name = video_name(3, "pick up the black bowl / plate", 7, 5, 0, "failure")
    assert name == "t03_pick_up_the_black_bowl_plate__init07__N5__seed0__failure.mp4"
    w = VideoWriter(tmp_path)
    rel = w.submit(name, list(frames(5)), ["task", "N=5"], None)
    w.close()
    assert rel == f"videos/{name}"
    assert iio.imread(tmp_path / rel).shape[0] == 5
