"""Tests for attnviz.data: SyntheticShapes, ImageFolderWithMasks, build_dataset."""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from attnviz.data import (
    DEMO_TRAINING,
    SHAPE_NAMES,
    ImageFolderWithMasks,
    RandomFlip,
    SyntheticShapes,
    build_dataset,
)
from attnviz.data import synthetic as syn
from attnviz.errors import DataError

# ----------------------------------------------------------------- SyntheticShapes


def test_sample_types_and_shapes():
    ds = SyntheticShapes(12, size=48, num_classes=6, seed=3)
    assert len(ds) == 12
    assert ds.class_names == SHAPE_NAMES[:6]
    for i in (0, 5, 11):
        image, label, mask = ds[i]
        assert image.shape == (3, 48, 48) and image.dtype == torch.float32
        assert isinstance(label, int) and label == i % 6
        assert mask.shape == (48, 48) and mask.dtype == torch.bool
        # The object is there and does not fill the image.
        assert 0.02 < mask.float().mean() < 0.5
    assert ds.targets == [i % 6 for i in range(12)]


def test_at_least_ten_shapes_and_num_classes_range():
    assert len(SHAPE_NAMES) >= 10
    assert len(set(SHAPE_NAMES)) == len(SHAPE_NAMES)
    SyntheticShapes(1, num_classes=2)
    SyntheticShapes(1, num_classes=len(SHAPE_NAMES))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"num_classes": 1}, ["num_classes", "[2, "]),
        ({"num_classes": len(SHAPE_NAMES) + 1}, ["num_classes", f"{len(SHAPE_NAMES)}]"]),
        ({"size": 31}, ["size", ">= 32", "31"]),
        ({"num_images": 0}, ["num_images", ">= 1", "0"]),
        ({"seed": -1}, ["seed", ">= 0"]),
        ({"split": "dev"}, ["split", "'train'", "'val'", "'dev'"]),
        ({"object_scale": (0.3, 0.1)}, ["object_scale"]),
        ({"distractors": (2, 1)}, ["distractors"]),
    ],
)
def test_invalid_arguments_name_parameter_and_range(kwargs, words):
    args = {"num_images": 4, **kwargs}
    n = args.pop("num_images")
    with pytest.raises(ValueError) as err:
        SyntheticShapes(n, **args)
    for w in words:
        assert w in str(err.value)


def test_non_int_num_classes_is_a_type_error():
    with pytest.raises(TypeError, match="num_classes"):
        SyntheticShapes(4, num_classes=2.5)


def test_index_out_of_range():
    ds = SyntheticShapes(3)
    with pytest.raises(IndexError, match="out of range"):
        ds[3]
    assert torch.equal(ds[-1][0], ds[2][0])


def test_deterministic_per_index_and_split():
    a = SyntheticShapes(20, seed=7)
    b = SyntheticShapes(20, seed=7)
    for i in (0, 13, 19):
        xa, ya, ma = a[i]
        xb, yb, mb = b[i]
        assert torch.equal(xa, xb) and ya == yb and torch.equal(ma, mb)
        assert torch.equal(a[i][0], xa)  # same object, second call
    # Different seeds, splits and indices give different images.
    val = SyntheticShapes(20, seed=7, split="val")
    other = SyntheticShapes(20, seed=8)
    assert not torch.equal(a[4][0], val[4][0])
    assert not torch.equal(a[4][0], other[4][0])
    assert not torch.equal(a[4][0], a[14][0])


def test_same_samples_in_worker_processes():
    ds = SyntheticShapes(8, size=32)
    main = next(iter(DataLoader(ds, batch_size=8, num_workers=0)))
    workers = next(iter(DataLoader(ds, batch_size=8, num_workers=2)))
    for x, y in zip(main, workers):
        assert torch.equal(x, y)


def test_cache_returns_identical_samples():
    plain, cached = SyntheticShapes(5), SyntheticShapes(5, cache=True)
    for _ in range(2):
        for i in range(5):
            assert torch.equal(plain[i][0], cached[i][0])


def test_normalisation_attributes_and_denormalize():
    ds = SyntheticShapes(4)
    assert len(ds.mean) == 3 and len(ds.std) == 3
    image, _, _ = ds[1]
    raw, _, _ = ds.render(1)
    back = ds.denormalize(image)
    expected = torch.from_numpy(raw).permute(2, 0, 1).float() / 255
    assert torch.allclose(back, expected, atol=1e-5)
    # Batched images work too.
    assert ds.denormalize(image[None]).shape == (1, 3, 64, 64)


def test_images_are_roughly_standardised():
    ds = SyntheticShapes(64, seed=1)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    assert x.mean(dim=(0, 2, 3)).abs().max() < 0.3
    assert ((x.std(dim=(0, 2, 3)) - 1).abs() < 0.3).all()


def test_mask_marks_exactly_where_the_object_is_drawn():
    ds = SyntheticShapes(10, seed=2)
    for i in range(10):
        with_obj, label, mask = ds.render(i)
        without, label2, mask2 = ds.render(i, draw_object=False)
        assert label == label2 and np.array_equal(mask, mask2)
        diff = np.abs(with_obj.astype(int) - without.astype(int)).max(axis=-1)
        # Outside the mask, only anti-aliased edge pixels may differ.
        edge = torch.nn.functional.max_pool2d(torch.from_numpy(mask)[None, None].float(), 3, 1, 1)[
            0, 0
        ].numpy()
        assert (diff[edge == 0] == 0).all()
        # Inside the mask, the object is visible (its colour is picked to stand out).
        assert np.median(diff[mask]) > 15


def _shape_mask(name: str, angle: float, mirror: float, n: int = 64) -> np.ndarray:
    ys, xs = np.mgrid[0:n, 0:n].astype(np.float32)
    xs, ys = (xs + 0.5) / n * 2 - 1, (ys + 0.5) / n * 2 - 1
    c, s = math.cos(angle), math.sin(angle)
    return syn._SHAPES[name]((xs * c + ys * s) * mirror, ys * c - xs * s)


def test_shapes_are_distinct_under_rotation_and_mirroring():
    # For every pair of classes, the best IoU over 36 rotations and a mirror stays
    # well below 1: classes differ by shape, not by pose.
    ref = {name: _shape_mask(name, 0.0, 1.0) for name in SHAPE_NAMES}
    poses = [(k * math.pi / 18, m) for k in range(36) for m in (1.0, -1.0)]
    for a in SHAPE_NAMES:
        assert 0.15 < ref[a].mean() < 0.7, a  # fits the unit disk, not degenerate
        posed = [_shape_mask(a, ang, m) for ang, m in poses]
        for b in SHAPE_NAMES:
            if a == b:
                continue
            best = max((p & ref[b]).sum() / (p | ref[b]).sum() for p in posed)
            assert best < 0.9, (a, b, best)


def _probe_accuracy(features: np.ndarray, labels: np.ndarray, k: int, n_train: int) -> float:
    """Test accuracy of a ridge-regression classifier on standardised features."""
    f = (features - features[:n_train].mean(0)) / (features[:n_train].std(0) + 1e-6)
    f = np.hstack([f, np.ones((len(f), 1))])
    onehot = np.eye(k)[labels]
    a, b = f[:n_train], onehot[:n_train]
    w = np.linalg.solve(a.T @ a + 10.0 * np.eye(a.shape[1]), a.T @ b)
    pred = (f[n_train:] @ w).argmax(1)
    return float((pred == labels[n_train:]).mean())


def _image_features(img: np.ndarray) -> np.ndarray:
    """Colour statistics, a coarse colour layout, colour histograms and texture energy."""
    x = img.astype(np.float32) / 255
    coarse = x.reshape(4, 16, 4, 16, 3).mean(axis=(1, 3)).ravel()
    bins = np.minimum((x * 6).astype(np.int64), 5) + 6 * np.arange(3)  # 6 bins per channel
    hist = np.bincount(bins.ravel(), minlength=18) / (x.size / 3)
    grad = [np.abs(np.diff(x, axis=a)).mean() for a in (0, 1)]
    return np.concatenate([x.mean((0, 1)), x.std((0, 1)), coarse, hist, grad])


def test_background_and_colour_do_not_predict_the_class():
    k, n_train, n_test = 10, 600, 400
    ds = SyntheticShapes(n_train + n_test, num_classes=k, seed=11)
    order = np.random.default_rng(0).permutation(len(ds))  # labels are index % k
    y = np.array(ds.targets)[order]
    tint = np.random.default_rng(1).uniform(-50, 50, size=(k, 3))
    bg_feats, tinted_feats, color_feats = [], [], []
    for i in order:
        # The same scene with the object left out: only background, clutter, noise.
        bg, label, mask = ds.render(int(i), draw_object=False)
        bg_feats.append(_image_features(bg))
        # Positive control: the same probe must catch a class-dependent tint.
        tinted = np.clip(bg + tint[label], 0, 255).astype(np.uint8)
        tinted_feats.append(_image_features(tinted))
        img, _, _ = ds.render(int(i))
        color_feats.append(img[mask].mean(0))  # the object's own colour
    chance, margin = 1 / k, 0.06  # binomial std at n=400 is 0.015
    bg_acc = _probe_accuracy(np.array(bg_feats), y, k, n_train)
    color_acc = _probe_accuracy(np.array(color_feats), y, k, n_train)
    tinted_acc = _probe_accuracy(np.array(tinted_feats), y, k, n_train)
    accs = {"background": bg_acc, "object colour": color_acc, "tinted": tinted_acc}
    assert bg_acc <= chance + margin, accs
    assert color_acc <= chance + margin, accs
    assert tinted_acc >= chance + 0.15, accs


def test_transform_moves_image_and_mask_together():
    ds = SyntheticShapes(3, transform=RandomFlip(horizontal=True, p=1.0))
    ref = SyntheticShapes(3)
    x, _, m = ds[1]
    x0, _, m0 = ref[1]
    assert torch.equal(x, x0.flip(-1)) and torch.equal(m, m0.flip(-1))
    assert type(m) is torch.Tensor


def test_torchvision_v2_transform_works():
    v2 = pytest.importorskip("torchvision.transforms.v2")
    ds = SyntheticShapes(2, transform=v2.RandomVerticalFlip(p=1.0))
    x, _, m = SyntheticShapes(2)[0]
    xt, _, mt = ds[0]
    assert torch.allclose(xt, x.flip(-2)) and torch.equal(mt, m.flip(-2))


def test_generation_is_fast():
    ds = SyntheticShapes(200, seed=5)
    ds.render(0)
    t = time.perf_counter()
    for i in range(200):
        ds.render(i)
    per_image = (time.perf_counter() - t) / 200
    # ~1.5 ms on one core; the bound leaves room for a busy machine.
    assert per_image < 0.015, per_image


def test_demo_training_defaults_are_consistent():
    for key in ("train_images", "val_images", "epochs", "batch_size", "lr"):
        assert key in DEMO_TRAINING
    assert DEMO_TRAINING["num_classes"] <= len(SHAPE_NAMES)
    assert DEMO_TRAINING["train_images"] > DEMO_TRAINING["val_images"] > 0


# ------------------------------------------------------------- ImageFolderWithMasks


def _write(path, array, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def _tree(tmp_path, masks=True):
    """root/{cat,dog}: 5 images in mixed formats; masks/ mirrors them."""
    rng = np.random.default_rng(0)
    root, mroot = tmp_path / "images", tmp_path / "masks"
    files = {
        "cat/a.png": (40, 60),
        "cat/b.JPG": (30, 45),
        "cat/sub/c.jpeg": (20, 20),
        "dog/d.bmp": (40, 40),
        "dog/e.webp": (24, 36),
    }
    for rel, (h, w) in files.items():
        fmt = "JPEG" if rel.lower().endswith(("jpg", "jpeg")) else None
        _write(root / rel, rng.integers(0, 255, (h, w, 3), dtype=np.uint8), fmt)
        if masks:
            m = np.zeros((h, w), np.uint8)
            m[: h // 2, : w // 2] = 255  # top-left quarter
            _write((mroot / rel).with_suffix(".png"), m)
    (root / "dog" / "notes.txt").write_text("not an image")
    return root, mroot


def test_folder_basic(tmp_path):
    root, _ = _tree(tmp_path, masks=False)
    ds = ImageFolderWithMasks(root, size=32)
    assert ds.classes == ["cat", "dog"] and ds.class_to_idx == {"cat": 0, "dog": 1}
    assert len(ds) == 5 and ds.targets == [0, 0, 0, 1, 1]
    image, label = ds[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == 0
    back = ds.denormalize(image)
    assert back.min() >= 0 and back.max() <= 1
    assert len(ImageFolderWithMasks(root, size=(16, 24))[4][0][0]) == 16


def test_folder_keeps_size_when_size_is_none(tmp_path):
    root, _ = _tree(tmp_path, masks=False)
    ds = ImageFolderWithMasks(root)
    shapes = {tuple(ds[i][0].shape) for i in range(len(ds))}
    assert (3, 40, 60) in shapes and (3, 20, 20) in shapes


def test_folder_with_masks(tmp_path):
    root, mroot = _tree(tmp_path)
    ds = ImageFolderWithMasks(root, masks_root=mroot, size=16)
    for i in range(len(ds)):
        image, _, mask = ds[i]
        assert image.shape == (3, 16, 16)
        assert mask.shape == (16, 16) and mask.dtype == torch.bool
        assert mask[:8, :8].all() and not mask[8:].any() and not mask[:, 8:].any()


def test_mask_of_other_size_is_refused_naming_both_files_and_sizes(tmp_path):
    root, mroot = _tree(tmp_path)
    m = np.zeros((20, 30), np.uint8)  # a.png is 40x60: half size, same aspect
    m[:10, :15] = 1
    _write(mroot / "cat" / "a.png", m)
    ds = ImageFolderWithMasks(root, masks_root=mroot)
    with pytest.raises(DataError) as err:
        ds[0]
    msg = str(err.value)
    assert str(mroot / "cat" / "a.png") in msg and str(root / "cat" / "a.png") in msg
    assert "30x20" in msg and "60x40" in msg and "resize_masks=True" in msg
    ds[1]  # masks of the right size still load


def test_resize_masks_resizes_same_aspect_masks_and_warns_once(tmp_path):
    root, mroot = _tree(tmp_path)
    for rel, (h, w) in (("cat/a.png", (20, 30)), ("dog/d.png", (20, 20))):
        m = np.zeros((h, w), np.uint8)
        m[: h // 2, : w // 2] = 1
        _write(mroot / rel, m)
    ds = ImageFolderWithMasks(root, masks_root=mroot, resize_masks=True)
    with pytest.warns(UserWarning, match=r"a\.png' is 30x20 .* is 60x40") as record:
        masks = [ds[i][2] for i in range(len(ds))]
    assert len(record) == 1
    assert masks[0].shape == (40, 60) and masks[0][:20, :30].all() and masks[0].sum() == 20 * 30
    assert masks[3].shape == (40, 40) and masks[3].sum() == 20 * 20


def test_mask_with_other_aspect_ratio_is_an_error(tmp_path):
    root, mroot = _tree(tmp_path)
    _write(mroot / "cat" / "a.png", np.zeros((40, 40), np.uint8))
    ds = ImageFolderWithMasks(root, masks_root=mroot)
    with pytest.raises(DataError, match=r"aspect ratio") as err:
        ds[0]
    assert "a.png" in str(err.value) and "40x40" in str(err.value)
    with pytest.raises(DataError, match=r"aspect ratio"):
        ImageFolderWithMasks(root, masks_root=mroot, resize_masks=True)[0]


def test_missing_mask_names_both_paths(tmp_path):
    root, mroot = _tree(tmp_path)
    (mroot / "dog" / "d.png").unlink()
    with pytest.raises(FileNotFoundError) as err:
        ImageFolderWithMasks(root, masks_root=mroot)
    msg = str(err.value)
    assert str(root / "dog" / "d.bmp") in msg and str(mroot / "dog" / "d.png") in msg


def test_folder_errors_name_the_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderWithMasks(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no class folders") as err:
        ImageFolderWithMasks(tmp_path)
    assert str(tmp_path) in str(err.value)
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "x.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no images found") as err:
        ImageFolderWithMasks(tmp_path)
    assert str(tmp_path) in str(err.value) and ".webp" in str(err.value)


def test_empty_class_folder_is_an_error_unless_not_selected(tmp_path):
    root, _ = _tree(tmp_path, masks=False)
    (root / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"without images.*'empty'"):
        ImageFolderWithMasks(root)
    assert ImageFolderWithMasks(root, classes=["dog", "cat"]).targets == [0, 0, 1, 1, 1]
    # Listed classes without a folder just have no samples; none existing is an error.
    ds = ImageFolderWithMasks(root, classes=["bird", "dog", "empty"])
    assert ds.targets == [1, 1] and ds.classes == ["bird", "dog", "empty"]
    with pytest.raises(FileNotFoundError, match="bird"):
        ImageFolderWithMasks(root, classes=["bird"])


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_image_raises_naming_the_file(tmp_path):
    root, _ = _tree(tmp_path, masks=False)
    _truncate(root / "cat" / "b.JPG")
    ds = ImageFolderWithMasks(root)
    ds[0]  # good files still load
    with pytest.raises(OSError, match=r"b\.JPG"):
        ds[1]


def test_skip_bad_drops_and_warns(tmp_path):
    root, mroot = _tree(tmp_path)
    _truncate(root / "cat" / "b.JPG")
    (root / "dog" / "e.webp").write_bytes(b"garbage")
    with pytest.warns(UserWarning) as record:
        ds = ImageFolderWithMasks(root, masks_root=mroot, skip_bad=True)
    text = " ".join(str(w.message) for w in record)
    assert "b.JPG" in text and "e.webp" in text
    assert len(ds) == 3
    assert all(len(ds[i]) == 3 for i in range(len(ds)))


def test_skip_bad_skips_images_without_masks(tmp_path):
    root, mroot = _tree(tmp_path)
    (mroot / "cat" / "a.png").unlink()
    with pytest.warns(UserWarning, match="a.png"):
        ds = ImageFolderWithMasks(root, masks_root=mroot, skip_bad=True)
    assert len(ds) == 4


def test_folder_transform_receives_image_and_mask(tmp_path):
    root, mroot = _tree(tmp_path)
    seen = []

    def transform(image, mask=None):
        seen.append((image.min().item() >= 0, image.max().item() <= 1, mask is not None))
        return (image, mask) if mask is not None else image

    ImageFolderWithMasks(root, masks_root=mroot, transform=transform, size=8)[0]
    ImageFolderWithMasks(root, transform=transform, size=8)[0]
    assert seen == [(True, True, True), (True, True, False)]
    flipped = ImageFolderWithMasks(root, masks_root=mroot, size=8, transform=RandomFlip(p=1.0))
    _, _, m = flipped[0]
    assert m[:4, 4:].all() and not m[:, :4].any()


def test_rgba_and_palette_masks(tmp_path):
    root, mroot = _tree(tmp_path)
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[..., 3] = 255  # opaque but black: empty mask
    rgba[:5, :5, 1] = 7
    _write(mroot / "cat" / "a.png", rgba)
    _, _, mask = ImageFolderWithMasks(root, masks_root=mroot)[0]
    assert mask.sum() == 25


# ------------------------------------------------------------------- build_dataset


def test_build_dataset_synthetic():
    ds = build_dataset("synthetic:12", split="val", size=32, num_classes=4)
    assert isinstance(ds, SyntheticShapes) and len(ds) == 12
    assert ds.split == "val" and ds.size == 32 and ds.num_classes == 4
    assert len(build_dataset("synthetic")) == DEMO_TRAINING["train_images"]
    assert len(build_dataset("synthetic", split="val")) == DEMO_TRAINING["val_images"]
    for bad in ("synthetic:", "synthetic:0", "synthetic:x"):
        with pytest.raises(ValueError, match="synthetic:N"):
            build_dataset(bad)
    with pytest.raises(ValueError, match="split"):
        build_dataset("synthetic", split="training")


def test_build_dataset_folder_with_splits(tmp_path):
    rng = np.random.default_rng(0)
    for split, classes in (("train", ["a", "b", "c"]), ("val", ["a", "c"])):
        for c in classes:
            _write(tmp_path / split / c / "x.png", rng.integers(0, 255, (8, 8, 3), np.uint8))
    train = build_dataset(tmp_path, "train", size=8)
    val = build_dataset(str(tmp_path), "val", size=8)
    assert train.classes == ["a", "b", "c"] and len(train) == 3
    # val labels follow train's class list, even though val lacks class "b".
    assert [val.classes[t] for t in val.targets] == ["a", "c"]
    assert val.targets == [0, 2]
    with pytest.raises(FileNotFoundError, match="'test'"):
        build_dataset(tmp_path, "test")


def test_build_dataset_plain_folder_and_errors(tmp_path):
    root, mroot = _tree(tmp_path)
    ds = build_dataset(root, "val", size=16, masks_root=mroot)
    assert isinstance(ds, ImageFolderWithMasks) and len(ds) == 5 and len(ds[0]) == 3
    with pytest.raises(FileNotFoundError, match="neither"):
        build_dataset(tmp_path / "missing")


def test_no_warnings_on_clean_folder(tmp_path):
    root, mroot = _tree(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = ImageFolderWithMasks(root, masks_root=mroot, skip_bad=True)
    assert len(ds) == 5
