"""The preprocessing keeps 16-bit information and treats every input format the same way."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from bps_vit.imaging import ImageReadError, Preprocessor, Stretch, prepare_image, read_image


def test_real_tiff_reads_as_uint16_149x141(real_image):
    array = read_image(real_image)
    assert array.dtype == np.uint16
    assert array.shape == (141, 149)  # rows x columns = height x width
    assert (array.min(), array.max()) == (257, 2470)


def test_stretch_keeps_dynamic_range_of_real_image(real_image):
    raw = read_image(real_image)
    out = prepare_image(real_image)
    assert out.shape == (141, 149, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert (out[..., 0] == 1.0).mean() < 0.01, "stretch saturates more than the top 0.2% + ties"
    # distinct values: a per-image linear stretch is one-to-one on the unclipped grey levels
    inner = np.unique(out[..., 0][(out[..., 0] > 0) & (out[..., 0] < 1)])
    raw_inner = np.unique(raw[(out[..., 0] > 0) & (out[..., 0] < 1)])
    assert len(inner) == len(raw_inner) > 300


def test_pillow_rgb_convert_is_the_trap_we_avoid(real_image):
    """Documents why the code never decodes BPS TIFFs with Pillow: `.convert('RGB')` on I;16 saturates every
    pixel to 255, and some Pillow releases (12.3) cannot even decode the Deflate crop. Either way, no 16-bit
    values come out of that path."""
    with Image.open(real_image) as image:
        assert image.mode.startswith("I;16")
        try:
            converted = np.asarray(image.convert("RGB"))
        except (OSError, TypeError, ValueError):
            return  # Pillow cannot decode it at all: the trap is only worse
    assert converted.min() == 255


def test_model_input_is_float_exact_not_8bit(real_image):
    pre = Preprocessor(stretch=Stretch(), height=64, width=64)
    pixels = pre([real_image])
    assert tuple(pixels.shape) == (1, 3, 64, 64)
    assert len(np.unique(pixels[0, 0].numpy())) > 1000  # an 8-bit round trip would leave <= 256 levels
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0
    assert np.allclose(pixels[0, 0], pixels[0, 2])


def test_8bit_png_rgb_rgba_and_16bit_tiff_agree(tmp_path, real_image):
    raw = read_image(real_image)
    as8 = (raw.astype(np.float32) / raw.max() * 255).astype(np.uint8)
    Image.fromarray(as8).save(tmp_path / "gray.png")
    Image.fromarray(np.repeat(as8[..., None], 3, axis=2)).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([as8, as8, as8, np.full_like(as8, 255)])).save(tmp_path / "rgba.png")
    Image.fromarray(np.repeat(as8[..., None], 3, axis=2)).save(tmp_path / "rgb.jpg", quality=95)
    pre = Preprocessor(stretch=Stretch(), height=32, width=32)
    reference = pre.gray(real_image)
    for name in ("gray.png", "rgb.png", "rgba.png", "rgb.jpg"):
        assert np.abs(pre.gray(tmp_path / name) - reference).mean() < 0.02, name


def test_fixed_clip_and_flat_image():
    image = np.full((50, 60), 300, np.uint16)
    assert Stretch()(image).max() == 0.0  # flat: no division by zero
    image[10:20, 10:20] = 1300
    out = Stretch(clip=(300, 2300))(image)
    assert out.max() == pytest.approx(0.5) and out.min() == 0.0


def test_bad_stretch_arguments_raise():
    with pytest.raises(ValueError, match="percentiles"):
        Stretch(low_percentile=99, high_percentile=1)
    with pytest.raises(ValueError, match="clip"):
        Stretch(clip=(10, 5))


@pytest.mark.parametrize("content,needle", [(b"", "empty"), (b"not an image at all", "cannot decode"),
                                            (b"II*\x00garbage-tiff", "cannot decode")])
def test_unreadable_files_name_the_file(tmp_path, content, needle):
    bad = tmp_path / "P1_1-A1_001_001_proj.tif"
    bad.write_bytes(content)
    with pytest.raises(ImageReadError, match=needle) as info:
        read_image(bad)
    assert bad.name in str(info.value)


def test_stretch_roundtrips_through_processor(tmp_path):
    from transformers import AutoImageProcessor, ViTImageProcessor

    processor = ViTImageProcessor(size={"height": 48, "width": 48})
    Stretch(2.0, 99.0).attach_to(processor)
    processor.save_pretrained(tmp_path)
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert Stretch.from_processor(loaded) == Stretch(2.0, 99.0)
    clipped = Stretch(clip=(300.0, 3500.0), transfer="asinh", transfer_gain=8.0)
    clipped.attach_to(processor)
    processor.save_pretrained(tmp_path / "clipped")
    assert Stretch.from_processor(AutoImageProcessor.from_pretrained(tmp_path / "clipped")) == clipped
    pre = Preprocessor.from_processor(loaded)
    assert (pre.height, pre.width, pre.stretch) == (48, 48, Stretch(2.0, 99.0))


@pytest.mark.parametrize("transfer", ["linear", "asinh", "log", "sqrt"])
def test_transfers_are_monotone_from_0_to_1_and_lift_dim_levels(transfer):
    image = np.linspace(300, 2300, 2001).astype(np.uint16).reshape(1, -1).repeat(2, axis=0)
    out = Stretch(clip=(300, 2300), transfer=transfer, transfer_gain=20.0)(image)[0]
    assert out.dtype == np.float32 and out[0] == 0.0 and out[-1] == pytest.approx(1.0)
    assert (np.diff(out) >= 0).all() and np.diff(out).sum() > 0
    quarter = out[500]  # a dim level, a quarter of the clip
    assert quarter == pytest.approx(0.25, abs=1e-6) if transfer == "linear" else quarter > 0.45
    if transfer == "asinh":
        assert quarter == pytest.approx(np.arcsinh(5.0) / np.arcsinh(20.0), rel=1e-5)
    stretch = Stretch(clip=(300, 2300), transfer=transfer, transfer_gain=20.0)
    assert stretch.raw_level(float(quarter), (300, 2300)) == pytest.approx(800.0, abs=0.5)  # the inverse
    with pytest.raises(ValueError, match="transfer"):
        Stretch(transfer="gamma")


def test_dataset_clip_is_the_pooled_percentile_of_the_images(tmp_path):
    from bps_vit.imaging import dataset_clip

    rng = np.random.default_rng(0)
    images = [rng.integers(250, 3000 + 500 * i, size=(30 + i, 40)).astype(np.uint16) for i in range(5)]
    paths = []
    for i, image in enumerate(images):
        tifffile.imwrite(tmp_path / f"{i}.tif", image)
        paths.append(tmp_path / f"{i}.tif")
    pooled = np.concatenate([image.ravel() for image in images])
    assert dataset_clip(paths, 1.0, 99.8) == pytest.approx(tuple(np.percentile(pooled, [1.0, 99.8])))
    assert dataset_clip(paths, 1.0, 99.8) == dataset_clip(list(reversed(paths)), 1.0, 99.8)  # pooled: order-free
    two = dataset_clip(paths, 5.0, 95.0, max_images=2, seed=3)
    assert two == dataset_clip(paths, 5.0, 95.0, max_images=2, seed=3)  # a seeded sample: the same on every rank
    with pytest.raises(ValueError, match="equal"):
        dataset_clip([np.full((4, 4), 7, np.uint16)])


def test_stretch_mode_dataset_from_the_training_arguments(tmp_path):
    from bps_vit.train import DataArguments

    images = [np.full((20, 20), 300 + 100 * i, np.uint16) for i in range(4)]
    args = DataArguments(stretch_mode="dataset", low_percentile=0.0, high_percentile=100.0,
                         intensity_transfer="asinh", transfer_gain=5.0)
    assert args.stretch().clip is None  # flags checked before the data is loaded
    stretch = args.stretch(images)
    assert stretch.clip == (300.0, 600.0) and stretch.transfer == "asinh" and stretch.transfer_gain == 5.0
    assert Stretch.from_dict(stretch.to_dict()) == stretch  # travels with the model
    with pytest.raises(ValueError, match="stretch_mode"):
        DataArguments(stretch_mode="plate").stretch()
    with pytest.raises(ValueError, match="drop --clip_low"):
        DataArguments(stretch_mode="dataset", clip_low=1.0, clip_high=2.0).stretch()


def test_tiff_written_by_tifffile_roundtrips(tmp_path):
    data = (np.arange(120 * 130, dtype=np.uint32) % 4000 + 250).astype(np.uint16).reshape(120, 130)
    tifffile.imwrite(tmp_path / "x.tif", data, compression="zlib")
    assert np.array_equal(read_image(tmp_path / "x.tif"), data)
    assert np.array_equal(read_image((tmp_path / "x.tif").read_bytes()), data)


def test_histogram_percentiles_equal_numpy_percentile(real_image):
    """The fast stretch bounds are numpy's linear-interpolation percentiles, not an approximation."""
    from bps_vit.imaging import integer_percentiles

    rng = np.random.default_rng(0)
    images = [
        read_image(real_image),
        rng.integers(0, 65535, (37, 53)).astype(np.uint16),
        rng.integers(0, 256, (3, 3)).astype(np.uint8),
        np.full((4, 5), 700, np.uint16),  # flat
        np.array([[0, 65535]], np.uint16),  # extremes, two pixels
    ]
    for image in images:
        for qs in [(1.0, 99.8), (0.0, 100.0), (0.5, 99.5), (37.3, 50.0)]:
            np.testing.assert_allclose(integer_percentiles(image, qs), np.percentile(image, qs), rtol=0, atol=1e-9)
    # the stretch uses them for integer images and numpy for floats; both give the same pixels
    raw = read_image(real_image)
    np.testing.assert_allclose(Stretch()(raw), Stretch()(raw.astype(np.float32)), rtol=0, atol=1e-6)


def test_map_in_threads_keeps_order_and_raises_like_a_loop():
    from bps_vit.threads import map_in_threads

    assert map_in_threads(lambda x: x * x, range(50), threads=2) == [x * x for x in range(50)]

    def fail_on_seven(x):
        if x == 7:
            raise ImageReadError(f"file {x}: broken")
        return x

    with pytest.raises(ImageReadError, match="file 7"):
        map_in_threads(fail_on_seven, range(20), threads=2)
