"""The model's machinery: synthetic training data, training/export/resume, checksum-verified loading and
inference in the input's own grid. Model-free tests use a random-weight network written to a temporary
folder (conftest's `random_model`); the quality test uses the shipped weights on the validation subject."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from SoftSpinalCordSegLib import inference  # noqa: E402
from SoftSpinalCordSegTraining import synth, train  # noqa: E402
from SoftSpinalCordSegLib.errors import InputError, ModelNotInstalledError  # noqa: E402
from SoftSpinalCordSegLib.io import reorient  # noqa: E402
from SoftSpinalCordSegLib.model import pad_amounts  # noqa: E402
from SoftSpinalCordSegLib.morphometry import dice  # noqa: E402


def _canal_patch(radius_cord_mm=4.0, radius_csf_mm=6.5):
    yy, xx = np.mgrid[0 : synth.PATCH_HR, 0 : synth.PATCH_HR] - synth.PATCH_HR / 2 + 0.5
    r = np.hypot(yy, xx) * synth.HIRES_MM
    patch = np.zeros((4, synth.PATCH_HR, synth.PATCH_HR), np.float16)
    patch[synth.WM] = r <= radius_cord_mm
    patch[synth.CSF] = (r > radius_cord_mm) & (r <= radius_csf_mm)
    patch[synth.BONE] = (r > radius_csf_mm + 1) & (r <= radius_csf_mm + 4)
    return patch


def _use_model_dir(monkeypatch, folder):
    monkeypatch.setenv("SOFTSEG_MODEL_DIR", str(folder))
    inference.cached_network.cache_clear()


def test_synthetic_slice_keeps_cord_area_within_the_augmentation_range():
    rng = np.random.default_rng(1)
    true_area = np.pi * 4.0**2
    areas = []
    for _ in range(12):
        image, target = synth.synthetic_sample(_canal_patch(), rng)
        assert image.shape == target.shape == (synth.OUT_PX, synth.OUT_PX)
        assert np.isfinite(image).all() and -0.21 <= image.min() and image.max() <= 1.51
        assert 0 <= target.min() and target.max() <= 1
        areas.append(target.sum())  # 1 mm pixels: the sum is the area in mm²
    areas = np.array(areas)
    full = areas[areas > 0]  # "no cord" samples and tight crops excepted
    # scale 0.75..1.3 with +-10 % anisotropy: the area stays in [0.75^2*0.9^2, 1.3^2*1.1^2] x the truth
    assert np.all(full <= true_area * 1.3**2 * 1.1**2 * 1.02)
    assert np.median(full) > true_area * 0.75**2 * 0.9**2
    assert (areas == 0).sum() <= 3


def test_rater_margin_widens_the_rendered_cord_but_not_its_target():
    patch = _canal_patch().astype(np.float32)
    cord_area = lambda occ: (occ[synth.WM] + occ[synth.GM]).sum() * synth.HIRES_MM**2  # noqa: E731
    widened = synth.widen_visible_cord(patch, 0.4)
    expected = np.pi * (4.4**2 - 4.0**2)  # a 4 mm disc grown by 0.4 mm
    assert abs(cord_area(widened) - cord_area(patch) - expected) < 0.15 * expected
    assert np.allclose(widened.sum(0), patch.sum(0))  # the cord grows into the CSF, the canal keeps its size
    plain = synth.synthetic_sample(patch, np.random.default_rng(3), 0.0)
    wide = synth.synthetic_sample(patch, np.random.default_rng(3), 0.4)
    assert np.array_equal(plain[1], wide[1]) and not np.allclose(plain[0], wide[0])


def test_csf_flow_voids_are_patches_on_some_slices():
    rng = np.random.default_rng(7)
    voids = [synth.csf_flow_voids((64, 64), rng) for _ in range(40)]
    assert all(v.shape == (64, 64) and 0 <= v.min() and v.max() <= 1 for v in voids)
    with_voids = [v for v in voids if v.max() > 0]
    assert 5 <= len(with_voids) <= 30  # about 40 % of the slices
    assert any(0 < v.mean() < 1 for v in with_voids)  # patches, not a uniform change


@pytest.mark.parametrize("side", [48, synth.WINDOW_PX, 80])
def test_cord_windows_keep_the_cord(side):
    rng = np.random.default_rng(4)
    for _ in range(10):
        image, target = synth.synthetic_sample(_canal_patch(), rng)
        window_image, window_target = synth.cord_window(image, target, rng, side)
        assert window_image.shape == window_target.shape == (side, side)
        assert window_target.sum() >= 0.95 * target.sum()


def test_window_batches_take_each_of_the_given_sizes(data_dir):
    generator = synth.SliceGenerator(data_dir, seed=0, n_pam50=4, window_fraction=1.0, window_sizes=[48, 80])
    sides = {generator.batch(2)[0].shape[-1] for _ in range(12)}
    assert sides == {48, 80}


def test_paired_batches_hold_two_contrasts_of_each_real_slice(data_dir):
    generator = synth.SliceGenerator(data_dir, seed=1, n_pam50=0, real_pairs=[
        (str(data_dir / image), str(data_dir / mask)) for image, mask in train.REAL_TRAINING_PAIRS], weights=(0, 0, 1),
        window_fraction=0.5, paired=True)
    for _ in range(4):
        images, targets = generator.batch(6)
        assert len(images) == 6 and targets.max() > 0.5
        np.testing.assert_array_equal(targets[0::2], targets[1::2])  # one anatomy, one target, one window
        assert all(np.abs(images[n] - images[n + 1]).mean() > 0.01 for n in (0, 2, 4))  # two intensity versions


def test_a_paired_share_puts_the_pairs_first_and_draws_the_rest_as_usual(data_dir):
    """--paired-share 0.5: a batch of 8 holds 2 pairs (items 0-3: one target per pair), then 4 single draws."""
    generator = synth.SliceGenerator(data_dir, seed=2, n_pam50=0, real_pairs=[
        (str(data_dir / image), str(data_dir / mask)) for image, mask in train.REAL_TRAINING_PAIRS], weights=(0, 0, 1),
        paired=0.5)
    assert synth.pair_count(0.5, 8) == 2 and synth.pair_count(True, 8) == 4
    images, targets = generator.batch(8)
    assert len(images) == 8
    np.testing.assert_array_equal(targets[0::2][:2], targets[1::2][:2])
    assert not np.array_equal(targets[4], targets[5]) or not np.array_equal(targets[6], targets[7])


def test_contrast_partners_are_the_other_images_sharing_a_slices_label():
    mask = np.zeros((20, 20), np.float32)
    mask[8:12, 8:12] = 1
    other_mask = np.roll(mask, 3, axis=0)
    on, off, other_subject = (np.random.default_rng(n).random((20, 20)).astype(np.float32) for n in range(3))
    slices = [(on, mask, (1, 1)), (off, mask, (1, 1)), (on, mask, (1, 1)),  # MT-on listed twice, as sub-05 is
              (other_subject, other_mask, (1, 1)), (off, mask, (0.5, 0.5))]  # another label; another grid
    assert synth.contrast_partners(slices) == [[1], [0, 2], [1], [], []]


def test_cross_contrast_pairs_are_two_registered_images_with_one_target(data_dir):
    mask = str(data_dir / "real/tutorial/sub-05_acq-MTon_MTS_seg.nii.gz")
    generator = synth.SliceGenerator(data_dir, seed=3, n_pam50=0, weights=(0, 0, 1), paired=True, cross_contrast=1.0,
                                     real_pairs=[(str(data_dir / f"real/tutorial/sub-05_acq-MT{s}_MTS.nii.gz"), mask)
                                                 for s in ("on", "off")])
    images, targets = generator.batch(8)
    np.testing.assert_array_equal(targets[0::2], targets[1::2])
    # same geometry: the two contrasts' edges line up (anatomy in one place), their intensities differ
    edges = np.hypot(*np.gradient(images[:, 0], axis=(1, 2)))
    for n in range(0, 8, 2):
        assert np.abs(images[n] - images[n + 1]).mean() > 0.01
        assert np.corrcoef(edges[n].ravel(), edges[n + 1].ravel())[0, 1] > 0.3
    for orphan in (["--cross-contrast", "0.5"], ["--inverted-pairs", "0.5"], ["--compression", "0.3"],
                   ["--band-squeeze", "0.5"]):
        with pytest.raises(SystemExit):  # options of --consistency or --pathology given without them
            train.parse_args(["--run", "x", *orphan])
    args = train.parse_args(["--run", "x", "--pathology", "--compression", "0.3", "--band-squeeze", "0.6"])
    assert train.pathology_mix(args) == {"compression": 0.3, "band_share": 0.6}
    assert train.pathology_mix(train.parse_args(["--run", "x", "--pathology"])) is True


def test_area_loss_is_the_mean_relative_error_of_each_cord_slices_soft_area():
    torch = pytest.importorskip("torch")
    target = torch.zeros((3, 1, 16, 16))
    target[0, 0, 4:12, 4:12] = 1  # 64 px of cord
    target[1, 0, 4:9, 4:9] = 1  # 25 px
    target[2, 0, 0, 0:5] = 1  # 5 px: the cord's tip, under AREA_LOSS_MIN_PX, left out
    prob = target.clone()
    assert float(train.area_loss(prob, target)) == 0.0
    prob[0] *= 0.75  # 25 % too small
    prob[1, 0, 4:9, 9] = 1  # 5 px of 25 too large: 20 %
    prob[2] = 1  # the tip's slice all cord: ignored
    assert float(train.area_loss(prob, target)) == pytest.approx((0.25 + 0.20) / 2)
    assert float(train.area_loss(prob, torch.zeros_like(target))) == 0.0  # no cord anywhere: nothing to measure
    logits = torch.zeros_like(target, requires_grad=True)  # a batch mixing slices with and without cord
    train.area_loss(logits.sigmoid(), target).backward()
    assert bool(torch.isfinite(logits.grad).all())


def test_cord_locations_drop_isolated_false_hits_and_fill_the_gaps():
    from SoftSpinalCordSegLib.inference import _cord_centres

    prob = np.zeros((7, 96, 96), np.float32)
    yy, xx = np.mgrid[0:96, 0:96]
    for n in range(7):
        prob[n][np.hypot(yy - 40 - n, xx - 50) < 5] = 0.9  # the cord drifts 1 mm a slice
    prob[3] = 0
    prob[3][np.hypot(yy - 80, xx - 10) < 6] = 0.9  # a bright blob far from the canal
    prob[5] = 0  # a slice where nothing was found
    centres = _cord_centres(prob)
    assert np.isnan(centres[[3, 5]]).all()
    assert np.allclose(centres[[0, 1, 2, 4, 6], 0], [40, 41, 42, 44, 46], atol=0.1)


def test_cord_locations_follow_the_cord_past_larger_blobs_and_across_a_lean():
    from SoftSpinalCordSegLib.inference import _cord_centres

    yy, xx = np.mgrid[0:128, 0:128]
    prob = np.zeros((12, 128, 128), np.float32)
    for n in range(12):
        prob[n][np.hypot(yy - 20 - 6 * n, xx - 60) < 5] = 0.9  # a cord leaning 31° (6 mm per 10 mm slice)
    for n in range(3, 8):
        prob[n][np.hypot(yy - 110, xx - 15) < 8] = 0.9  # an artefact larger than the cord on 5 slices in a row
    centres = _cord_centres(prob)
    assert np.allclose(centres[:, 0], 20 + 6 * np.arange(12), atol=0.1)
    # slices sampled 40 mm apart: the cord moves 24 mm from one to the next, and is still followed
    assert np.allclose(_cord_centres(prob[::4], sample_mm=40.0)[:, 0], [20, 44, 68], atol=0.1)
    # at 10 mm apart they are too far to follow: no chain, each slice keeps its largest blob
    assert np.allclose(_cord_centres(prob[::4], sample_mm=10.0)[:, 0], [20, 110, 68], atol=0.1)
    # the cord missed on 4 sampled slices in a row (40 mm) is still one cord
    missed = prob.copy()
    missed[[3, 4, 5, 6]] = 0
    missed[3:7][:, np.hypot(yy - 110, xx - 15) < 8] = 0.9
    missed[4, 44:46, 59:61] = 0.9  # a speck of 4 mm² where the cord would be: noise, not a cord
    centres = _cord_centres(missed)
    assert np.allclose(centres[[0, 1, 2, 7, 8, 9, 10, 11], 0], 20 + 6 * np.array([0, 1, 2, 7, 8, 9, 10, 11]), atol=0.1)
    assert np.isnan(centres[3:7]).all()


def test_area_downsample_conserves_partial_volume():
    hires = (np.random.default_rng(0).random((64, 64)) > 0.7).astype(np.float32)
    low = synth.area_downsample(hires)
    assert low.shape == (32, 32)
    assert low.sum() * 4 == pytest.approx(hires.sum())


def test_shrinking_slices_averages_partial_volume_like_training():
    import torch
    import torch.nn.functional as F

    hires = (np.random.default_rng(0).random((3, 64, 48)) > 0.7).astype(np.float32)
    halved = inference.resize_slices(torch.from_numpy(hires), (32, 24)).numpy()
    assert np.allclose(halved, [synth.area_downsample(s) for s in hires], atol=1e-6)
    for size in ((45, 33), (57, 47), (20, 40)):  # non-integer factors: cord fractions keep their area
        coarse = inference.resize_slices(torch.from_numpy(hires), size).numpy()
        scale = 64 * 48 / (size[0] * size[1])
        assert coarse.sum() * scale == pytest.approx(hires.sum(), rel=1e-4)
        assert coarse.min() >= 0 and coarse.max() <= 1
    grown = inference.resize_slices(torch.from_numpy(hires), (100, 70))
    expected = F.interpolate(torch.from_numpy(hires)[:, None], size=(100, 70), mode="bilinear", align_corners=False)
    assert torch.allclose(grown, expected[:, 0], atol=1e-5)


def test_padding_reaches_the_training_canvas_and_the_divisor():
    for size in (5, 40, 127, 128, 129, 300):
        before, after = pad_amounts(size)
        total = size + before + after
        assert total >= 128 and total % 16 == 0 and abs(before - after) <= 1


def test_weights_failing_their_checksum_are_refused(random_model):
    inference.load_network("cpu")  # a good load is cached...
    weights = random_model / inference.WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))  # ...and weights replaced afterwards are checked again, not taken from it
    with pytest.raises(ModelNotInstalledError, match="SHA-256"):
        inference.load_network("cpu")
    (random_model / (inference.WEIGHTS_NAME + ".sha256")).write_text("0" * 64 + "\n")
    inference.cached_network.cache_clear()
    with pytest.raises(ModelNotInstalledError, match="SHA-256"):
        inference.load_network("cpu")


def test_the_torchscript_architecture_computes_what_monai_builds(tmp_path):
    from SoftSpinalCordSegLib.model import build_network, fill_parameters, load_architecture, save_architecture

    torch.manual_seed(1)
    monai_net = build_network().eval()
    save_architecture(tmp_path / "arch.pt")
    assert (tmp_path / "arch.pt").stat().st_size < 400_000  # code only: the weights ship in the .pt file
    scripted = fill_parameters(load_architecture(tmp_path / "arch.pt"), monai_net.state_dict()).eval()
    x = torch.randn(3, 1, 64, 96)
    with torch.inference_mode():
        assert torch.allclose(scripted(x), monai_net(x), atol=1e-5)
    with pytest.raises(ValueError, match="parameter names"):
        fill_parameters(scripted, {"conv.weight": torch.zeros(1)})


def test_the_loaded_network_is_frozen_and_computes_what_monai_builds(random_model, monkeypatch):
    from SoftSpinalCordSegLib.model import build_network, save_architecture

    monkeypatch.setenv("SOFTSEG_FP32", "1")  # exact arithmetic: bf16 is compared in the next test
    architecture = random_model / inference.ARCHITECTURE_NAME
    save_architecture(architecture)
    (random_model / (inference.ARCHITECTURE_NAME + ".sha256")).write_text(inference.sha256_of(architecture) + "\n")
    inference.cached_network.cache_clear()
    net = inference.load_network("cpu")
    assert isinstance(net, torch.jit.ScriptModule) and not list(net.parameters())  # weights folded in as constants
    monai_net = build_network().eval()
    state = torch.load(random_model / inference.WEIGHTS_NAME, weights_only=True)
    monai_net.load_state_dict({k: v.float() for k, v in state.items()})
    x = torch.randn(2, 1, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert torch.allclose(net(x), monai_net(x), atol=1e-5)


@pytest.mark.skipif(not torch.cpu._is_avx512_bf16_supported(), reason="this CPU has no native bf16: the network runs in fp32")
def test_the_network_runs_in_bf16_where_the_cpu_has_it_and_reads_as_fp32_does(random_model, monkeypatch):
    monkeypatch.delenv("SOFTSEG_FP32", raising=False)
    image = np.random.default_rng(5).random((60, 50, 6)).astype(np.float32)
    assert inference.network_dtype("cpu") == torch.bfloat16
    bf16 = inference.segment_image(image, np.eye(4), device="cpu", largest_component=False)
    monkeypatch.setenv("SOFTSEG_FP32", "1")
    assert inference.network_dtype("cpu") == torch.float32  # also a new cache entry: the fp32 network
    fp32 = inference.segment_image(image, np.eye(4), device="cpu", largest_component=False)
    assert 0 < np.abs(bf16 - fp32).max() < 0.03


def test_a_network_reads_in_the_dtype_it_was_loaded_or_trained_in(random_model, monkeypatch):
    """A network in training reads float32 even where the shipped one runs in bf16; the frozen shipped network
    keeps the dtype it was loaded in whatever SOFTSEG_FP32 says afterwards."""
    from SoftSpinalCordSegLib.model import build_network

    monkeypatch.setattr(inference, "network_dtype", lambda device: torch.bfloat16)
    training = build_network()
    assert inference.input_dtype(training) == torch.float32
    prob = inference.predict_slices(training.eval(), np.random.default_rng(1).random((40, 40, 3)), np.ones(3))
    assert prob.shape == (40, 40, 3)
    loaded = inference.load_network("cpu")
    assert inference.input_dtype(loaded) == torch.bfloat16
    monkeypatch.setattr(inference, "network_dtype", lambda device: torch.float32)
    assert inference.input_dtype(loaded) == torch.bfloat16


def test_the_architecture_is_checksummed_and_falls_back_to_monai(random_model):
    architecture = random_model / inference.ARCHITECTURE_NAME
    architecture.write_bytes(b"not a TorchScript archive")
    (random_model / (inference.ARCHITECTURE_NAME + ".sha256")).write_text("0" * 64 + "\n")
    inference.cached_network.cache_clear()
    with pytest.raises(ModelNotInstalledError, match="SHA-256"):
        inference.load_network("cpu")
    # a file that passes its checksum but that this torch cannot load: the network comes from MONAI
    (random_model / (inference.ARCHITECTURE_NAME + ".sha256")).write_text(inference.sha256_of(architecture) + "\n")
    inference.cached_network.cache_clear()
    net = inference.load_network("cpu")
    assert not isinstance(net, torch.jit.ScriptModule)
    assert net(torch.zeros(1, 1, 32, 32, dtype=inference.network_dtype("cpu"))).shape == (1, 1, 32, 32)


def test_missing_weights_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("SOFTSEG_MODEL_DIR", raising=False)
    monkeypatch.setattr(inference, "__file__", str(tmp_path / "inference.py"))  # hide the shipped weights
    with pytest.raises(ModelNotInstalledError, match="no trained model"):
        inference.segment_image(np.random.rand(32, 32, 4), np.eye(4))
    _use_model_dir(monkeypatch, tmp_path)  # a chosen folder without weights is said, not skipped
    with pytest.raises(ModelNotInstalledError, match="SOFTSEG_MODEL_DIR=.* holds no softseg_2d.pt"):
        inference.segment_image(np.random.rand(32, 32, 4), np.eye(4))


@pytest.mark.parametrize("axcodes", ["LPS", "PSR", "LAS"])
def test_output_is_in_the_input_grid_whatever_the_orientation(random_model, axcodes):
    rng = np.random.default_rng(0)
    image = rng.random((40, 30, 6)).astype(np.float32)
    affine = np.diag([0.8, 0.9, 3.0, 1.0])
    reference = inference.segment_image(image, affine, device="cpu", largest_component=False)
    assert reference.shape == image.shape and reference.dtype == np.float32
    assert 0 <= reference.min() and reference.max() <= 1
    moved, moved_affine = reorient(image, affine, axcodes)
    result = inference.segment_image(moved, moved_affine, device="cpu", largest_component=False)
    back, _ = reorient(result, moved_affine, "RAS")
    np.testing.assert_allclose(back, reference, atol=1e-5)


def test_the_last_bits_of_a_spacing_do_not_move_the_1mm_grid(random_model):
    """Slicer and nibabel read gm-challenge sub-9584's 0.41666667 mm pixels a few bits apart: 210 of them
    are 87.4999986 or 87.5000016 mm, which round() made 87 or 88 pixels (CSA up to 2.2 mm² apart)."""
    image = np.random.default_rng(4).random((210, 40, 3)).astype(np.float32)
    readings = [inference.segment_image(image, np.diag([spacing, 0.5, 3.0, 1.0]), device="cpu", largest_component=False)
                for spacing in (np.float32(0.41666666), 0.4166666745)]
    assert np.array_equal(*readings)
    assert inference.rounded_count(87.4999986) == inference.rounded_count(87.5000016) == 88
    # halves round to even as before (no saved output moves): 0.5 mm x 141 px, a 10 mm step of 0.8 mm slices
    assert [inference.rounded_count(x) for x in (70.5, 10 / np.float32(0.8), 2.5, 87.6)] == [70, 12, 2, 88]


def test_cpu_inference_is_deterministic(random_model):
    image = np.random.default_rng(3).random((50, 50, 4)).astype(np.float32)
    first = inference.segment_image(image, np.eye(4), device="cpu")
    second = inference.segment_image(image, np.eye(4), device="cpu")
    assert np.array_equal(first, second)


def test_reading_both_polarities_by_default_gives_one_answer_for_an_image_and_its_inverse(random_model):
    image = np.random.default_rng(4).random((50, 40, 4)).astype(np.float32)
    inverse = image.max() - image  # T1w-like against T2w-like: the same anatomy, grey levels reversed
    both = inference.segment_image(image, np.eye(4), device="cpu", largest_component=False)
    np.testing.assert_allclose(inference.segment_image(inverse, np.eye(4), device="cpu", largest_component=False),
                               both, atol=5e-3)  # bf16 arithmetic
    one = inference.segment_image(image, np.eye(4), device="cpu", largest_component=False, both_polarities=False)
    other = inference.segment_image(inverse, np.eye(4), device="cpu", largest_component=False, both_polarities=False)
    assert np.abs(one - other).max() > 1e-3  # a single reading depends on the polarity
    floor = inference.NOISE_FLOOR
    np.testing.assert_allclose(np.where(both > floor, both, 0), np.where((one + other) / 2 > floor, (one + other) / 2, 0),
                               atol=floor)


def test_bad_arrays_are_refused_with_input_errors(random_model):
    with pytest.raises(InputError, match="3D"):
        inference.segment_image(np.zeros((4, 4)), np.eye(4))
    with pytest.raises(InputError, match="constant"):
        inference.segment_image(np.ones((4, 4, 4)), np.eye(4))
    bad = np.random.rand(4, 4, 4)
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        inference.segment_image(bad, np.eye(4))
    with pytest.raises(InputError, match="float32"):  # finite in float64, infinite for the network
        inference.segment_image(np.random.rand(4, 4, 4) * 1e300, np.eye(4))
    for wrong in (np.zeros((4, 4)), np.eye(3), np.diag([1.0, 0.0, 1.0, 1.0])):
        with pytest.raises(InputError, match="affine"):
            inference.segment_image(np.random.rand(4, 4, 4), wrong)
    with pytest.raises(InputError, match="real grey levels"):
        inference.segment_image(np.random.rand(4, 4, 4) > 0.5, np.eye(4))
    soft = np.zeros((20, 20, 4), np.float32)
    soft[8:11, 8:11] = np.random.rand(3, 3, 4)  # a soft mask given as the image (as `segment` writes it)
    with pytest.raises(InputError, match="probability map"):
        inference.segment_image(soft, np.eye(4))
    assert inference.soft_mask_zeros(soft + 0.5) == 0 and inference.soft_mask_zeros(soft * 2) == 0  # grey levels
    with pytest.raises(InputError, match="device"):
        inference.resolve_device("tpu")


def test_largest_component_keeps_the_cord_and_drops_specks():
    prob = np.zeros((30, 30, 10), np.float32)
    prob[10:16, 10:16, :] = 0.9
    prob[10:16, 9, :] = 0.3  # partial-volume rim next to the cord is kept
    prob[25:27, 25:27, 4] = 0.8  # a speck far away is removed
    cleaned = inference.keep_largest_component(prob, 1.0)
    assert cleaned[12, 12, 5] == pytest.approx(0.9)
    assert cleaned[12, 9, 5] == pytest.approx(0.3)
    assert cleaned[25:27, 25:27, 4].max() == 0


@pytest.mark.parametrize("slice_mm", [1.0, 2.5])
def test_largest_component_bridges_a_gap_of_up_to_5_mm_where_the_cord_lines_up(slice_mm):
    """A gap of weak slices up to inference.BRIDGED_GAP_MM long keeps the cord beyond it (with its faint
    readings); a longer gap, or pieces that do not overlap in-plane, split it and the smaller piece goes."""
    gap = int(inference.BRIDGED_GAP_MM / slice_mm)
    prob = np.zeros((30, 20, 6 + gap + 3 + (gap + 1) + 4), np.float32)
    prob[8:13, 8:13, :] = 0.9
    short = slice(6, 6 + gap)  # bridged
    long = slice(short.stop + 3, short.stop + 3 + gap + 1)  # one slice too long
    prob[8:13, 8:13, short] = 0.3
    prob[8:13, 8:13, long] = 0.1
    prob[20:25, 8:13, -2:] = 0.9  # in-plane elsewhere: not the cord's continuation
    cleaned = inference.keep_largest_component(prob, slice_mm)
    assert cleaned[10, 10, : long.start].tolist() == pytest.approx(prob[10, 10, : long.start].tolist())
    assert cleaned[10, 10, long.start :].max() == 0
    assert cleaned[20:25, 8:13].max() == 0


def test_gaps_are_bridged_only_where_both_sides_overlap():
    cord = np.zeros((10, 10, 6), bool)
    cord[2:5, 2:5, :2] = True
    cord[3:6, 3:6, 4:] = True  # overlaps the piece below on [3:5, 3:5]
    bridged = inference.bridge_gaps(cord, 2)
    assert bridged[3:5, 3:5, 2:4].all()
    assert bridged[:, :, 2:4].sum() == 2 * 4
    assert not inference.bridge_gaps(cord, 1)[:, :, 2:4].any()  # a gap of two slices, one allowed


def test_clean_up_in_a_file_grid_is_the_one_segment_image_applies():
    prob = np.zeros((12, 20, 20), np.float32)  # a sagittal grid: the cord runs along the file's j axis
    prob[4:8, :, 8:12] = 0.9
    prob[4:8, 6, 8:12] = 0.3  # one weak slice along the cord
    prob[4:8, 14:16, 8:12] = 0.2  # weak slices over 5 mm (j is 3 mm apart): what lies beyond them is removed
    affine = np.array([[0, 0, -1, 0], [1, 0, 0, 0], [0, 3, 0, 0], [0, 0, 0, 1]], float)  # i: A, j: S (3 mm), k: L
    cleaned = inference.keep_largest_component_in_grid(prob, affine)
    assert cleaned.shape == prob.shape
    assert cleaned[5, :14, 9].min() == pytest.approx(0.3)
    assert cleaned[5, 16:, 9].max() == 0


def test_zeros_along_a_slice_edge_lie_outside_the_field_of_view():
    """A zero slab along a slice's edge (a narrow slab resampled into a larger grid) is outside the field of
    view; a zero hole inside a slice and a few zero voxels at its edge (a noise background) are image."""
    volume = np.random.default_rng(0).uniform(1, 2, (40, 30, 3)).astype(np.float32)
    volume[:10, :, 0] = 0
    volume[20:23, 10:13, 1] = 0
    volume[0, :3, 2] = 0  # 3 voxels: under OUTSIDE_MIN_SHARE of the slice
    outside = inference.outside_field(volume)
    assert outside[:10, :, 0].all() and outside.sum() == 10 * 30
    assert inference.outside_field(volume[..., 1:]) is None  # the hole and the few edge voxels stay image


def test_voxels_outside_on_some_slices_take_the_nearest_slice_inside_at_their_place():
    """An oblique reslice's corner: outside on some slices, inside on others at the same in-plane place, it takes
    the nearest slice's voxel (the nearer below on a tie); a place outside on every slice stays outside."""
    volume = np.arange(1, 13, dtype=np.float32).reshape(2, 1, 6)
    outside = np.zeros(volume.shape, bool)
    outside[0, 0, [0, 1, 3, 5]] = True
    outside[1, 0, :] = True
    filled, still = inference.filled_along_slices(volume, outside)
    np.testing.assert_array_equal(filled[0, 0], [3, 3, 3, 3, 5, 5])
    np.testing.assert_array_equal(still, outside & (np.arange(2) == 1)[:, None, None])
    no_corner, none_filled = inference.filled_along_slices(volume, outside & (np.arange(2) == 1)[:, None, None])
    assert no_corner is volume and none_filled.sum() == 6


def test_the_outside_of_the_field_continues_the_slice_smoothly_and_partial_pixels_take_their_inside_mean():
    """Mostly outside: the Gaussian-weighted mean of the pixels inside (as scipy's normalised convolution at full
    resolution, near the inside); partly outside: the mean of the part inside; inside: as it was."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    slices = torch.from_numpy(rng.uniform(1, 2, (3, 90, 70)).astype(np.float32))
    slices[0] = 5.0
    slices[2, :, 35:] += 2.0  # a brighter right half: the fill beside it brighter too
    share = torch.zeros_like(slices)
    share[0, :10] = 1.0  # ten rows outside
    share[0, 10] = 0.25  # a row a quarter outside: its zeros took a quarter of its average
    yy, xx = np.mgrid[:90, :70]
    outside = np.hypot(yy - 45, xx - 35) > 15  # a disc inside
    share[2] = torch.from_numpy(outside.astype(np.float32))
    filled = inference.filled_outside(slices * (1 - share), share).numpy()
    np.testing.assert_allclose(filled[0], 5.0, rtol=1e-5)
    np.testing.assert_array_equal(filled[1], slices[1].numpy())
    np.testing.assert_array_equal(filled[2][~outside], slices[2].numpy()[~outside])
    inside = (~outside).astype(float)
    expected = (ndimage.gaussian_filter(slices[2].numpy() * inside, inference.FILL_SIGMA_MM, mode="nearest")
                / ndimage.gaussian_filter(inside, inference.FILL_SIGMA_MM, mode="nearest"))
    near = outside & (ndimage.distance_transform_edt(outside) <= 12)
    np.testing.assert_allclose(filled[2][near], expected[near], atol=0.03)  # 4 mm grid: within 1.5 % of the step
    assert filled[2][near & (xx >= 50)].mean() > filled[2][near & (xx < 20)].mean() + 1.0


def test_training_runs_resumes_and_exports_a_loadable_model(data_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    tiny = ["--data", str(data_dir), "--batch", "2", "--pam50-slabs", "4", "--workers", "0", "--threads", "1",
            "--validate-every", "1000"]
    common = tiny + ["--run", str(run)]
    assert train.main(common + ["--iterations", "2", "--stop-after", "1"]) == 0
    assert torch.load(run / "last.pt", weights_only=True)["iteration"] == 1
    assert train.main(common + ["--resume"]) == 0
    assert torch.load(run / "last.pt", weights_only=True)["iteration"] == 2
    assert "start at iteration 1" in (run / "train.log").read_text()
    export_dir = tmp_path / "model"
    assert train.main(["--run", str(run), "--export", str(export_dir)]) == 0
    _use_model_dir(monkeypatch, export_dir)
    prob = inference.segment_image(np.random.default_rng(0).random((20, 20, 3)), np.eye(4), device="cpu")
    assert prob.shape == (20, 20, 3)
    assert isinstance(inference.load_network("cpu"), torch.jit.ScriptModule)  # the exported architecture, not MONAI
    inference.cached_network.cache_clear()
    # a synthetic-only fine-tune on 64 px cord windows still owes the real images its --init run saw
    tuned, tuned_export = tmp_path / "tuned", tmp_path / "tuned_model"
    assert train.main(tiny + ["--run", str(tuned), "--iterations", "1", "--init", str(run), "--no-real",
                              "--window-fraction", "1", "--rater-margin", "0.3"]) == 0
    assert train.main(["--run", str(tuned), "--export", str(tuned_export)]) == 0
    text = (tuned_export / "model.json").read_text()
    assert str(tmp_path) not in text and str(data_dir) not in text  # no path of the training machine
    meta = json.loads(text)
    assert (meta["config"]["run"], meta["config"]["init"], meta["config"]["data"]) == ("tuned", "run", data_dir.name)
    assert meta["config"]["no_real"] and meta["real_training_images"] == [train.REAL_TRAINING_PAIRS[0][0]]
    assert meta["rater_margin_mm"] == 0.3  # the edge convention the demo and the model card read
    # self-training: pseudo-labelled pairs replace the labelled image left out
    pseudo = _pseudo_label_folder(tmp_path / "pseudo")
    selftrained, selftrained_export = tmp_path / "selftrained", tmp_path / "selftrained_model"
    assert train.main(tiny + ["--run", str(selftrained), "--iterations", "1", "--real-fraction", "1", "--no-synthetic",
                              "--exclude-real", "sub-05", "--pseudo-labels", str(pseudo)]) == 0
    assert train.main(["--run", str(selftrained), "--export", str(selftrained_export)]) == 0
    meta = json.loads((selftrained_export / "model.json").read_text())
    assert meta["real_training_images"] == ["real/tutorial/fake.nii.gz (pseudo-labelled)"]
    # consistency: real slices in pairs of two intensity versions, an extra loss term
    paired = tmp_path / "paired"
    assert train.main(tiny + ["--run", str(paired), "--iterations", "1", "--no-synthetic", "--real-fraction", "1",
                              "--consistency", "1"]) == 0
    assert json.loads(torch.load(paired / "last.pt", weights_only=True)["config"])["consistency"] == 1.0
    with pytest.raises(SystemExit):  # pairs are made of real slices only
        train.parse_args(["--run", str(paired), "--consistency", "1"])
    assert train.parse_args(["--run", str(paired), "--consistency", "1", "--paired-share", "0.25"]).paired_share == 0.25
    with pytest.raises(SystemExit):  # a share of the pairs of --consistency
        train.parse_args(["--run", str(paired), "--paired-share", "0.25"])
    # distillation: a narrower student learns the exported model's mean reading of a slice and of its inverse
    teacher = train.load_teacher(export_dir, "cpu")
    x = torch.from_numpy(np.random.default_rng(1).uniform(-0.2, 1.5, (2, 1, 32, 32)).astype(np.float32))
    net = inference.load_network("cpu", export_dir)
    with torch.no_grad():
        readings = [torch.sigmoid(net(v.to(inference.input_dtype(net))).float()) for v in (x, (1 - x).clamp(-0.2, 1.5))]
    assert torch.allclose(teacher(x), (readings[0] + readings[1]) / 2)
    student, student_export = tmp_path / "student", tmp_path / "student_model"
    assert train.main(tiny + ["--run", str(student), "--iterations", "2", "--stop-after", "1", "--teacher",
                              str(export_dir), "--features", "4", "8", "8", "8", "16", "4"]) == 0
    assert train.main(tiny + ["--run", str(student), "--resume"]) == 0  # the widths come from the checkpoint
    assert train.main(["--run", str(student), "--export", str(student_export)]) == 0
    assert json.loads((student_export / "model.json").read_text())["config"]["teacher"] == "model"
    _use_model_dir(monkeypatch, student_export)
    inference.cached_network.cache_clear()
    assert max(v.shape[0] for v in torch.load(student_export / inference.WEIGHTS_NAME, weights_only=True).values()) == 16
    prob = inference.segment_image(np.random.default_rng(0).random((20, 20, 3)), np.eye(4), device="cpu")
    assert prob.shape == (20, 20, 3)  # the exported architecture has the student's widths, or the weights would not fill it


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU: training on it is allowed")
def test_training_on_a_missing_gpu_stops_with_a_clear_error_and_writes_nothing(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(SystemExit, match="no CUDA GPU is available"):
        train.main(["--run", str(run), "--device", "cuda", "--iterations", "1"])
    assert not run.exists()


def _pseudo_label_folder(folder):
    """pairs.json of SoftSpinalCordSegTraining/pseudo_label.py with one small image and its soft label (a disc)."""
    import nibabel as nib

    folder.mkdir()
    yy, xx = np.mgrid[0:40, 0:40]
    label = np.repeat(np.clip(6 - np.hypot(yy - 20, xx - 20), 0, 1)[..., None], 3, axis=2).astype(np.float32)
    image = 100 + 50 * label + np.random.default_rng(0).normal(0, 5, label.shape).astype(np.float32)
    entry = {"image": str(folder / "fake.nii.gz"), "label": str(folder / "fake_pseudo.nii.gz"),
             "source": "real/tutorial/fake.nii.gz"}
    nib.save(nib.Nifti1Image(image, np.eye(4)), entry["image"])
    nib.save(nib.Nifti1Image(label, np.eye(4)), entry["label"])
    (folder / "pairs.json").write_text(json.dumps({"teacher": "test", "pairs": [entry]}))
    return folder


def _shipped_segment(array, affine):
    """The shipped model's soft mask of an image; skip without a model."""
    inference.cached_network.cache_clear()
    try:
        return inference.segment_image(array, affine, device="cpu")
    except ModelNotInstalledError as error:
        pytest.skip(str(error))


def _shipped_model_on(shared_file, image, mask):
    """(volume, manual mask, soft mask of the shipped model, Dice at 0.5) of a shared image; skip without a model."""
    from SoftSpinalCordSegLib.io import load_mask, load_volume

    volume = load_volume(shared_file(image))
    manual = load_mask(shared_file(mask), volume).array >= 0.5
    prob = _shipped_segment(volume.array, volume.affine)
    pred = prob >= 0.5
    return volume, manual, prob, dice(pred, manual)


def test_shipped_model_segments_the_validation_subject(shared_file):
    """Regression bar on unf01 T2w (never trained on): Dice 0.932 and CSA +9.3 % when shipped (its rater draws
    inside the cord's visible edge: model card, "Edge convention"); tools/validation_set.py prints every image."""
    from SoftSpinalCordSegLib.morphometry import compute_csa

    volume, manual, prob, overlap = _shipped_model_on(
        shared_file, "real/unf01/sub-unf01_T2w.nii.gz", "real/unf01/sub-unf01_T2w_seg-manual.nii.gz")
    csa_model = np.nanmean(compute_csa(prob, volume.affine).column("csa_mm2").astype(float))
    csa_manual = np.nanmean(compute_csa(manual.astype(np.float32), volume.affine).column("csa_mm2").astype(float))
    assert overlap >= 0.90
    assert abs(csa_model / csa_manual - 1) <= 0.16


def test_large_fields_of_view_are_segmented_in_cord_windows(shared_file):
    """sub-05 MT-on, 230 mm slices: segmented whole they gave 1.54x the manual area; in windows, on the slices
    its rater labelled, Dice 0.924 and 1.01x the area when shipped (sub-05 is in the training data: this
    guards the two-pass inference, not generalisation)."""
    _, manual, prob, _ = _shipped_model_on(
        shared_file, "real/tutorial/sub-05_acq-MTon_MTS.nii.gz", "real/tutorial/sub-05_acq-MTon_MTS_seg.nii.gz")
    rated = manual.any(axis=(0, 1))  # axial slices along the third axis; the first and last are unlabelled
    assert dice(prob[..., rated] >= 0.5, manual[..., rated]) >= 0.87
    assert abs(prob[..., rated].sum() / manual.sum() - 1) <= 0.1


def test_a_field_of_view_cut_by_zeros_reads_as_that_field_alone(shared_file):
    """unf01 T1w with all but a 51 mm wide slab zeroed (as unf01 T2w's slab resampled into its grid) reads
    the CSA of the same slab cropped out, within 1 % (the zeros read as image: +4 %), and nothing outside."""
    from SoftSpinalCordSegLib.io import load_volume
    from SoftSpinalCordSegLib.morphometry import compute_csa

    volume = load_volume(shared_file("real/unf01/sub-unf01_T1w.nii.gz"))
    image, affine = volume.array.astype(np.float32), volume.affine
    slab = np.zeros_like(image)
    slab[42:93] = image[42:93]
    cropped_affine = affine.copy()
    cropped_affine[:3, 3] += affine[:3, 0] * 42

    def csa(array, grid):
        prob = _shipped_segment(array, grid)
        return prob, np.nanmean(compute_csa(prob, grid).column("csa_mm2").astype(float))

    prob, in_zeros = csa(slab, affine)
    _, cropped = csa(image[42:93], cropped_affine)
    assert in_zeros == pytest.approx(cropped, rel=0.01)
    assert prob[:42].max() == 0 and prob[93:].max() == 0


def test_an_image_masked_to_a_disc_around_the_cord_reads_as_unmasked(shared_file):
    """unf01 T2star with everything over 20 mm from the cord's centre zeroed (a mask applied) reads within 4 %
    of the image as it is (filled with the nearest pixel inside, the outside's streaks made it read +14 %)."""
    from SoftSpinalCordSegLib.io import load_volume

    volume = load_volume(shared_file("real/unf01/sub-unf01_T2star.nii.gz"))
    manual = load_volume(shared_file("real/unf01/sub-unf01_T2star_seg-manual.nii.gz")).array >= 0.5
    image = volume.array.astype(np.float32)
    masked = image.copy()
    xx, yy = np.mgrid[: image.shape[0], : image.shape[1]]
    for k in range(image.shape[2]):
        cx, cy = np.argwhere(manual[..., k]).mean(axis=0)
        masked[..., k][np.hypot(xx - cx, yy - cy) > 20] = 0  # 1 mm voxels
    as_is, disc = (_shipped_segment(a, volume.affine).sum() for a in (image, masked))
    assert disc == pytest.approx(as_is, rel=0.04)


def _training_tool(name):
    """A training tool (SoftSpinalCordSegTraining/NAME.py)."""
    import importlib

    return importlib.import_module(f"SoftSpinalCordSegTraining.{name}")


def _disc_stack(radii, size=30):
    """A soft-edged disc per slice (third axis) of the given radii (0: empty slice)."""
    yy, xx = np.mgrid[0:size, 0:size] - size / 2 + 0.5
    return np.stack([np.clip(r + 0.5 - np.hypot(yy, xx), 0, 1) if r else np.zeros((size, size)) for r in radii],
                    axis=2).astype(np.float32)


def test_blur_probe_renders_the_canal_with_its_exact_cord_area():
    """SoftSpinalCordSegTraining/blur_probe.py: the target keeps the cord's area; the image puts the T2w-like levels in place and
    blurring conserves the signal (so only the network can make the cord read smaller)."""
    blur_probe = _training_tool("blur_probe")
    patch = _canal_patch(radius_cord_mm=4.0).astype(np.float32)
    sharp, target = blur_probe.render([patch], margin_mm=0.8, fwhm_mm=0.0)
    blurred, _ = blur_probe.render([patch], margin_mm=0.8, fwhm_mm=3.0)
    assert target.shape == sharp.shape == (synth.OUT_PX, synth.OUT_PX, 1)
    assert target.sum() == pytest.approx(patch[synth.WM].sum() * synth.HIRES_MM**2)  # mm2 at 1 mm pixels
    centre = synth.OUT_PX // 2
    assert sharp[centre, centre, 0] == pytest.approx(blur_probe.INTENSITIES["cord"])
    assert sharp[centre, centre + 5, 0] == pytest.approx(blur_probe.INTENSITIES["csf"])  # 5-6 mm from the centre: CSF
    assert blurred.sum() == pytest.approx(sharp.sum(), rel=1e-3)


def test_consensus_label_averages_the_contrasts_but_not_a_missed_slice():
    a, b = _disc_stack([5, 5, 4]), _disc_stack([6, 0, 6])
    label = _training_tool("pseudo_label").consensus_label([a, b])
    assert np.allclose(label[..., 0], (a[..., 0] + b[..., 0]) / 2)  # areas 0.7:1, both vote
    assert np.allclose(label[..., 1], a[..., 1])  # b found nothing there: a alone
    assert np.allclose(label[..., 2], b[..., 2])  # a found under half of b's area


def test_resampled_label_keeps_its_place_and_area_on_another_grid():
    """The MT0/MT1 label onto the DWI's grid: here a 0.5 mm grid, flipped left-right and offset."""
    from scipy import ndimage

    label = _disc_stack([5] * 4)
    source = np.diag([1.0, 1.0, 5.0, 1.0])
    target = np.array([[-0.5, 0, 0, 25.0], [0, 0.5, 0, 3.0], [0, 0, 5.0, 0], [0, 0, 0, 1]])
    moved = _training_tool("pseudo_label").resample_label(label, source, (40, 40, 4), target)
    assert moved.shape == (40, 40, 4) and moved.min() >= 0 and moved.max() <= 1
    assert moved[..., 1].sum() * 0.25 == pytest.approx(label[..., 1].sum(), rel=0.03)  # mm2
    centre = target @ np.r_[ndimage.center_of_mass(moved[..., 1]), 1, 1]
    assert np.allclose(centre[:2], source[:2, :2] @ ndimage.center_of_mass(label[..., 1]), atol=0.1)


def test_dwi_views_tell_b0_from_diffusion_weighted_volumes():
    series = np.full((4, 4, 2, 20), 300.0, np.float32)
    series[..., [0, 19]] = 1000.0
    series[..., 1] = 200.0
    views = _training_tool("pseudo_label").dwi_views(series)
    assert list(views) == ["mean", "b0 mean", "diffusion-weighted mean", "volume 1", "volume 16"]
    assert views["b0 mean"].max() == 1000.0 and views["volume 1"].max() == 200.0
    assert views["diffusion-weighted mean"].mean() == pytest.approx((200 + 17 * 300) / 18)


def test_a_consensus_entry_replaces_the_labelled_image_and_repeats(tmp_path):
    """SoftSpinalCordSegTraining/pseudo_label.py --consensus lists sub-05 MT-on with its manual mask twice: it must not come a
    third time from REAL_TRAINING_PAIRS."""
    folder = _pseudo_label_folder(tmp_path / "pseudo")
    listing = json.loads((folder / "pairs.json").read_text())
    entry = listing["pairs"][0]
    listing["pairs"] = [dict(entry, source=train.REAL_TRAINING_PAIRS[0][0], label_from="manual mask", repeat=2),
                        dict(entry, view="mean")]
    (folder / "pairs.json").write_text(json.dumps(listing))
    args = train.parse_args(["--run", str(tmp_path / "run"), "--data", "/data", "--pseudo-labels", str(folder)])
    assert train.real_pairs(args) == [(entry["image"], entry["label"])] * 3
    images = train.real_training_images(vars(args))
    assert images == [f"{train.REAL_TRAINING_PAIRS[0][0]} (manual mask)", "real/tutorial/fake.nii.gz mean (pseudo-labelled)"]
    # a fine-tuning run does not list again, bare, an image its --init run learnt from
    parent = tmp_path / "parent"
    parent.mkdir()
    import torch

    torch.save({"config": json.dumps(vars(train.parse_args(["--run", str(parent), "--data", "/data"])))},
               parent / "last.pt")
    child = train.parse_args(["--run", str(tmp_path / "run"), "--data", "/data", "--pseudo-labels", str(folder),
                              "--init", str(parent)])
    assert train.real_training_images(vars(child)) == images


def test_pseudo_labels_keep_each_image_grid_and_its_source(data_dir, random_model, tmp_path):
    """SoftSpinalCordSegTraining/pseudo_label.py on the 4D DWI alone (the others excluded): its mean and a soft mask, same grid."""
    import nibabel as nib

    pseudo_label = _training_tool("pseudo_label")
    out = tmp_path / "pseudo"
    excluded = sum([["--exclude", text] for text in ("sub-0", "mt0", "mt1", "t2_ms")], [])
    assert pseudo_label.main(["--data", str(data_dir), "--weights-dir", str(random_model), "--out", str(out)]
                             + excluded) == 0
    (entry,) = json.loads((out / "pairs.json").read_text())["pairs"]
    assert entry["source"] == "real/tutorial/dmri.nii.gz"
    image, label = nib.load(entry["image"]), nib.load(entry["label"])
    assert image.shape == label.shape == nib.load(data_dir / entry["source"]).shape[:3]
    assert np.allclose(image.affine, label.affine)
    assert 0 <= label.get_fdata().min() and label.get_fdata().max() <= 1


def test_magnified_slices_scale_the_cord_area_about_its_centre(tool):
    from scipy import ndimage

    evaluate_model = tool("evaluate_model")
    discs = np.moveaxis(_disc_stack([6, 6, 0]), 2, 0)  # slices along the first axis, centred at (14.5, 14.5)
    centre = np.array([14.5, 14.5])
    for factor in (0.85, 1.15):
        scaled = evaluate_model.magnify_slices(discs, factor, centre, axis=0, order=1)
        assert scaled[0].sum() == pytest.approx(discs[0].sum() * factor**2, rel=0.03)
        assert np.allclose(ndimage.center_of_mass(scaled[1]), centre, atol=0.05)
        assert scaled[2].sum() == 0


def test_edge_offsets_name_the_anatomical_side_where_the_outline_lies_outside(tool):
    """An outline 2 voxels further posterior and 1 voxel further right than the manual one, in an LPS file
    (array axis 0 runs to the left, axis 1 to the posterior) with 0.5 mm voxels."""
    evaluate_model = tool("evaluate_model")
    manual = _disc_stack([6, 6, 6]) >= 0.5
    wider = manual | np.roll(manual, 2, axis=1) | np.roll(manual, -1, axis=0)
    lps = np.diag([-0.5, -0.5, 2.0, 1.0])
    offsets = evaluate_model.edge_offsets(wider.astype(np.float32), manual, lps)
    assert offsets == pytest.approx({"R": 0.5, "L": 0.0, "A": 0.0, "P": 1.0}, abs=1e-6)
