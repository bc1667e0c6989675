"""Named datasets (oxford-pets, voc-seg, cifar10, imagenette) on tiny fakes of their own layouts.

Each fake is written here the way torchvision's class of that dataset lays it
out on disk (a few 12-24 px photos, trimaps, palette PNGs, binary and pickled
CIFAR batches, WordNet-id folders).
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnviz.data import (
    IMAGENETTE_CLASSES,
    NAMED_DATASETS,
    VOC_CLASSES,
    Cifar10,
    Imagenette,
    OxfordPets,
    VOCObjects,
    build_dataset,
    canonical_spec,
    load_data_pickle,
)
from attnviz.errors import DataError, DataNotFoundError, UntrustedCodeError

# ------------------------------------------------------------------------ fakes

# (image id, class id) as in the pets list files; two breeds of cats, one of dogs.
PETS_TRAINVAL = [
    ("Abyssinian_1", 1),
    ("Abyssinian_2", 1),
    ("american_bulldog_10", 2),
    ("american_bulldog_11", 2),
    ("Bengal_3", 3),
]
PETS_TEST = [("Abyssinian_5", 1), ("american_bulldog_12", 2), ("Bengal_4", 3), ("Bengal_7", 3)]


def _trimap(h: int, w: int, top: int, left: int, ph: int, pw: int) -> np.ndarray:
    """Background 2, a pet rectangle 1 with a one-pixel border band 3 around it."""
    t = np.full((h, w), 2, np.uint8)
    t[max(top - 1, 0) : top + ph + 1, max(left - 1, 0) : left + pw + 1] = 3
    t[top : top + ph, left : left + pw] = 1
    return t


def _photo_of(trimap: np.ndarray) -> np.ndarray:
    """A photo where the pet (trimap 1 or 3) is white on black: the image shows the mask."""
    return np.repeat(np.where(trimap != 2, 255, 0).astype(np.uint8)[..., None], 3, axis=2)


def make_pets(root: Path) -> Path:
    """``root/oxford-iiit-pet/`` as torchvision's OxfordIIITPet writes it."""
    base = root / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations" / "trimaps").mkdir(parents=True)
    for n, (image_id, _) in enumerate(PETS_TRAINVAL + PETS_TEST):
        h, w = (16, 24) if n % 2 else (20, 14)  # landscape and portrait
        tri = _trimap(h, w, top=3, left=2 + n % 3, ph=h // 2, pw=w // 2)
        Image.fromarray(_photo_of(tri)).save(base / "images" / f"{image_id}.jpg", quality=95)
        Image.fromarray(tri).save(base / "annotations" / "trimaps" / f"{image_id}.png")
    for name, rows in (("trainval", PETS_TRAINVAL), ("test", PETS_TEST)):
        lines = [f"{i} {k} {1 if i[0].isupper() else 2} {n}" for n, (i, k) in enumerate(rows, 1)]
        (base / "annotations" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return root


VOC_TRAIN, VOC_VAL = ["2008_000001", "2008_000002", "2008_000003"], ["2009_000001", "2009_000002"]


def _voc_classes(index: int) -> np.ndarray:
    """Class maps with a known largest class: (map, VOC class index of the label)."""
    m = np.zeros((18, 22), np.uint8)
    if index % 3 == 0:  # dog (12) is largest, a smaller person (15), void outlines
        m[2:14, 2:14] = 12
        m[1, 1:15] = 255
        m[10:16, 15:20] = 15
    elif index % 3 == 1:  # tie between cat (8) and car (7): the lower index wins
        m[0:5, 0:6] = 8
        m[10:15, 10:16] = 7
    else:  # void covers more pixels than the bird (3): void is never the label
        m[:, :12] = 255
        m[14:17, 14:18] = 3
    return m


VOC_EXPECTED = {0: 12, 1: 7, 2: 3}


def _palette_png(classes: np.ndarray, path: Path) -> None:
    img = Image.fromarray(classes, mode="P")
    rng = np.random.default_rng(0)
    img.putpalette(rng.integers(0, 256, 256 * 3, dtype=np.uint8).tolist())
    img.save(path)


def make_voc(root: Path) -> Path:
    """``root/VOCdevkit/VOC2012/`` as torchvision's VOCSegmentation writes it."""
    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True)
    for n, image_id in enumerate(VOC_TRAIN + VOC_VAL):
        classes = _voc_classes(n)
        photo = np.where(classes[..., None] == VOC_EXPECTED[n % 3], 255, 0).astype(np.uint8)
        Image.fromarray(np.repeat(photo, 3, axis=2)).save(
            base / "JPEGImages" / f"{image_id}.jpg", quality=95
        )
        _palette_png(classes, base / "SegmentationClass" / f"{image_id}.png")
    for name, ids in (("train", VOC_TRAIN), ("val", VOC_VAL)):
        (base / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("\n".join(ids) + "\n")
    return root


CIFAR_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
CIFAR_BATCHES = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]


def _cifar_arrays(name: str) -> tuple[np.ndarray, list[int]]:
    n = 3 if name == "test_batch" else 2
    rng = np.random.default_rng(CIFAR_BATCHES.index(name))
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n).tolist()


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 strings, as the CIFAR python batches (pickled by Python 2) are."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _py2_pickle(obj: object, path: Path) -> None:
    import io

    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # numpy 1 (what pickled the real files) names numpy.core; the opcode is plain text.
    data = buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    path.write_bytes(data)


def make_cifar(root: Path, kind: str = "py") -> Path:
    """``root/cifar-10-batches-py/`` (torchvision's download) or ``cifar-10-batches-bin/``."""
    folder = root / ("cifar-10-batches-py" if kind == "py" else "cifar-10-batches-bin")
    folder.mkdir(parents=True)
    for name in CIFAR_BATCHES:
        data, labels = _cifar_arrays(name)
        if kind == "bin":
            records = np.concatenate([np.array(labels, np.uint8)[:, None], data], axis=1)
            records.tofile(folder / f"{name}.bin")
        else:
            entry = {
                b"batch_label": name.encode(),
                b"labels": labels,
                b"data": data,
                b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
            }
            _py2_pickle(entry, folder / name)
    if kind == "bin":
        (folder / "batches.meta.txt").write_text("\n".join(CIFAR_NAMES) + "\n\n")
    else:
        meta = {b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_vis": 3072}
        _py2_pickle(meta, folder / "batches.meta")
    return root


IMAGENETTE_FAKE = {
    "train": {"n01440764": 2, "n02102040": 3},
    "val": {"n01440764": 1, "n02102040": 1},
}


def make_imagenette(root: Path, folder: str = "imagenette2-160") -> Path:
    """``root/imagenette2-160/{train,val}/<wnid>/*.JPEG`` as torchvision's Imagenette writes it."""
    rng = np.random.default_rng(0)
    for split, counts in IMAGENETTE_FAKE.items():
        for wnid, n in counts.items():
            (root / folder / split / wnid).mkdir(parents=True)
            for k in range(n):
                arr = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / folder / split / wnid / f"x_{k}.JPEG")
    return root


@pytest.fixture
def pets(tmp_path):
    return make_pets(tmp_path / "pets")


# ------------------------------------------------------------------ oxford-pets


def test_pets_labels_classes_and_splits(pets):
    train = build_dataset(f"oxford-pets:{pets}", "train", 16)
    val = build_dataset(f"oxford-pets:{pets}", "val", 16)
    assert isinstance(train, OxfordPets)
    assert train.classes == val.classes == ["Abyssinian", "American Bulldog", "Bengal"]
    assert train.targets == [k - 1 for _, k in PETS_TRAINVAL]
    assert val.targets == [k - 1 for _, k in PETS_TEST]
    assert [Path(p).stem for p, _ in val.samples] == [i for i, _ in PETS_TEST]
    assert len(build_dataset(f"oxford-pets:{pets}", "test", 16)) == len(PETS_TEST)
    # The oxford-iiit-pet folder itself works as PATH too.
    assert len(build_dataset(f"oxford-pets:{pets / 'oxford-iiit-pet'}", "val", 16)) == 4
    image, label, mask = val[1]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and label == 1
    assert mask.shape == (16, 16) and mask.dtype == torch.bool


def test_pets_trimap_values_and_border_rule(pets):
    ds = OxfordPets(pets, "train")  # size None: the trimap's own pixels
    tri = np.asarray(Image.open(pets / "oxford-iiit-pet/annotations/trimaps/Abyssinian_1.png"))
    _, _, mask = ds[0]
    assert torch.equal(mask, torch.from_numpy(tri != 2))  # border (3) counts as pet
    _, _, sure = OxfordPets(pets, "train", border="background")[0]
    assert torch.equal(sure, torch.from_numpy(tri == 1))
    assert mask.sum() > sure.sum() > 0


@pytest.mark.parametrize("resize", ["crop", "stretch"])
def test_pets_mask_follows_the_photo_through_resize(pets, resize):
    # The photos are white exactly on the pet: after any resize / crop the mask must be
    # where the photo is bright (bilinear edges aside).
    ds = OxfordPets(pets, "val", size=12, resize=resize)
    for i in range(len(ds)):
        image, _, mask = ds[i]
        gray = ds.denormalize(image).mean(0)
        assert mask[gray > 0.9].all() and not mask[gray < 0.1].any()
        assert (gray > 0.9).sum() > 4 and (gray < 0.1).sum() > 4


def test_pets_crop_is_a_pretrained_models_eval_transform(pets):
    from torchvision.models import ResNet18_Weights

    ds = OxfordPets(pets, "val", size=16)
    # torchvision's own: shorter side to int(16 / 0.875) = 18, centre crop 16, normalise.
    reference = ResNet18_Weights.IMAGENET1K_V1.transforms(crop_size=16, resize_size=18)
    for i in range(len(ds)):
        ours = ds[i][0]
        with Image.open(ds.samples[i][0]) as img:
            theirs = reference(img.convert("RGB"))
        assert ours.shape == theirs.shape == (3, 16, 16)
        assert torch.allclose(ours, theirs, atol=1e-6)


def test_pets_exif_orientation_is_honoured(pets):
    base = pets / "oxford-iiit-pet"
    tri = _trimap(24, 16, top=2, left=1, ph=8, pw=12)  # upright: portrait, pet at the top
    upright = Image.fromarray(_photo_of(tri))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; viewers turn it 90 degrees clockwise
    upright.transpose(Image.Transpose.ROTATE_90).save(
        base / "images" / "Abyssinian_5.jpg", exif=exif, quality=95
    )
    Image.fromarray(tri).save(base / "annotations" / "trimaps" / "Abyssinian_5.png")
    image, _, mask = OxfordPets(pets, "val")[0]
    assert image.shape == (3, 24, 16)
    gray = OxfordPets(pets, "val").denormalize(image).mean(0)
    assert mask[gray > 0.9].all() and not mask[gray < 0.1].any()


def test_pets_bad_trimap_and_missing_files_name_the_file(pets):
    trimaps = pets / "oxford-iiit-pet" / "annotations" / "trimaps"
    Image.fromarray(np.full((16, 24), 255, np.uint8)).save(trimaps / "Abyssinian_5.png")
    with pytest.raises(DataError, match=r"Abyssinian_5\.png.*not an Oxford-IIIT Pet trimap"):
        OxfordPets(pets, "val")[0]
    (trimaps / "Bengal_4.png").unlink()
    with pytest.raises(DataNotFoundError, match=r"trimap .*Bengal_4\.png.* test split is missing"):
        OxfordPets(pets, "val")
    with pytest.warns(UserWarning) as record:
        assert len(OxfordPets(pets, "val", skip_bad=True)) == 2  # bad and missing skipped
    warned = " ".join(str(w.message) for w in record)
    assert "Abyssinian_5.png" in warned and "Bengal_4" in warned
    listing = pets / "oxford-iiit-pet" / "annotations" / "test.txt"
    listing.write_text("Abyssinian_5 one 1 1\n")
    with pytest.raises(DataError, match=r"test\.txt' line 1: expected 'IMAGE_ID CLASS_ID"):
        OxfordPets(pets, "val")


# ---------------------------------------------------------------------- voc-seg


def test_voc_label_is_the_largest_class_and_mask_its_pixels(tmp_path):
    root = make_voc(tmp_path / "voc")
    train = build_dataset(f"voc-seg:{root}", "train", 16)
    val = build_dataset(f"voc-seg:{root}", "val", 16)
    assert isinstance(train, VOCObjects) and len(train) == 3 and len(val) == 2
    assert train.classes == list(VOC_CLASSES) and len(VOC_CLASSES) == 20
    assert train.classes[11] == "dog" and train.classes[14] == "person"
    assert train.targets == [VOC_EXPECTED[n] - 1 for n in range(3)]  # dog, car (tie), bird
    assert val.targets == [VOC_EXPECTED[n % 3] - 1 for n in range(3, 5)]
    full = VOCObjects(root, "train")
    for i in range(3):
        _, label, mask = full[i]
        classes = _voc_classes(i)
        assert torch.equal(mask, torch.from_numpy(classes == label + 1))
        assert not mask[torch.from_numpy(classes == 255)].any()
    for i in range(3):
        image, _, mask = train[i]  # cropped: the mask still sits on the photo's bright pixels
        gray = train.denormalize(image).mean(0)
        assert mask.shape == (16, 16)
        assert mask[gray > 0.9].all() and not mask[gray < 0.1].any()
    with pytest.raises(DataError, match=r"split must be one of \['train', 'val'\]"):
        build_dataset(f"voc-seg:{root}", "test", 16)
    # The VOC2012 folder itself works as PATH too.
    assert len(VOCObjects(root / "VOCdevkit" / "VOC2012", "val")) == 2


def test_voc_colour_rendered_segmentation_is_refused(tmp_path):
    root = make_voc(tmp_path / "voc")
    seg = root / "VOCdevkit/VOC2012/SegmentationClass" / f"{VOC_VAL[0]}.png"
    Image.open(seg).convert("RGB").save(seg)
    with pytest.raises(DataError, match=r"2009_000001\.png' is a RGB image: expected a palette"):
        VOCObjects(root, "val")[0]


# ---------------------------------------------------------------------- cifar10


@pytest.mark.parametrize("kind", ["py", "bin"])
def test_cifar_both_layouts_read_the_same_records(tmp_path, kind):
    root = make_cifar(tmp_path / "c", kind)
    train = build_dataset(f"cifar10:{root}", "train", 32)
    val = build_dataset(f"cifar10:{root}", "val", 32)
    assert isinstance(train, Cifar10) and train.format == kind
    assert train.classes == CIFAR_NAMES and len(train) == 10 and len(val) == 3
    expected = [_cifar_arrays(n) for n in CIFAR_BATCHES[:5]]
    assert train.targets == [label for _, labels in expected for label in labels]
    pixels = np.concatenate([d for d, _ in expected]).reshape(-1, 3, 32, 32)
    assert np.array_equal(train.data, pixels.transpose(0, 2, 3, 1))
    sample = train[7]
    assert len(sample) == 2  # no masks
    back = (train.denormalize(sample[0]) * 255).round().to(torch.uint8)
    assert torch.equal(back, torch.from_numpy(pixels[7]))
    assert val.targets == _cifar_arrays("test_batch")[1]
    assert build_dataset(f"cifar10:{root}", "val", 48)[0][0].shape == (3, 48, 48)


def test_cifar_python_batches_match_torchvisions_reader(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    root = make_cifar(tmp_path / "c", "py")
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)  # our own fake
    for train in (True, False):
        theirs = tv_cifar.CIFAR10(str(root), train=train)
        ours = Cifar10(root, "train" if train else "val")
        assert np.array_equal(ours.data, theirs.data) and ours.targets == theirs.targets
        assert ours.classes == theirs.classes


class _Exploit:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


@pytest.mark.parametrize("target", ["data_batch_1", "batches.meta"])
def test_crafted_cifar_pickle_is_refused_and_runs_nothing(tmp_path, target):
    root = make_cifar(tmp_path / "c", "py")
    sentinel = tmp_path / "pwned"
    payload = {"data": _Exploit(sentinel), "labels": [], "label_names": _Exploit(sentinel)}
    (root / "cifar-10-batches-py" / target).write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(
        UntrustedCodeError, match=rf"{target}' is a pickle that names (posix|nt)\.system"
    ):
        Cifar10(root, "train")
    assert not sentinel.exists()
    # The same file does run code under pickle.load: the test would notice a broken guard.
    pickle.loads(pickle.dumps(payload["data"]))
    assert sentinel.exists()


def test_load_data_pickle_reads_plain_values_and_arrays(tmp_path):
    path = tmp_path / "x.pkl"
    value = {"a": [1, 2.5, "s", None, (True,)], "b": np.arange(6, dtype=np.int16).reshape(2, 3)}
    for protocol in (3, 4):
        path.write_bytes(pickle.dumps(value, protocol=protocol))
        got = load_data_pickle(path)
        assert got["a"] == value["a"] and np.array_equal(got["b"], value["b"])
    path.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="not a readable data pickle"):
        load_data_pickle(path)


def test_cifar_torn_binary_batch_is_an_error(tmp_path):
    root = make_cifar(tmp_path / "c", "bin")
    path = root / "cifar-10-batches-bin" / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"test_batch\.bin' has 9214 bytes: not a whole number"):
        Cifar10(root, "val")


# ------------------------------------------------------------------- imagenette


def test_imagenette_readable_names_and_splits(tmp_path):
    root = make_imagenette(tmp_path / "nette")
    train = build_dataset(f"imagenette:{root}", "train", 16)
    val = build_dataset(f"imagenette:{root}", "val", 16)
    assert isinstance(train, Imagenette)
    assert train.classes == val.classes == ["tench", "English springer"]
    assert train.wnids == ["n01440764", "n02102040"]
    assert train.targets == [0, 0, 1, 1, 1] and val.targets == [0, 1]
    image, label = val[1]
    assert image.shape == (3, 16, 16) and label == 1
    assert len(IMAGENETTE_CLASSES) == 10
    with pytest.raises(DataError, match="imagenette split must be one of"):
        build_dataset(f"imagenette:{root}", "test", 16)
    assert len(Imagenette(root / "imagenette2-160", "val")) == 2  # the version folder as PATH


# ------------------------------------------------------- download and missing data

TORCHVISION_CLASS = {
    "oxford-pets": "OxfordIIITPet",
    "voc-seg": "VOCSegmentation",
    "imagenette": "Imagenette",
}


@pytest.mark.parametrize("name", sorted(NAMED_DATASETS))
def test_download_true_reaches_torchvision_only_when_data_is_missing(tmp_path, monkeypatch, name):
    import torchvision.datasets as tvd
    import torchvision.datasets.utils as tvu

    calls = []
    root = tmp_path / name

    def fake_class(*args, **kwargs):  # stands in for torchvision's dataset class
        calls.append((Path(args[0]), kwargs))
        {"oxford-pets": make_pets, "voc-seg": make_voc, "imagenette": make_imagenette}[name](root)

    def fake_archive(url, download_root, **kwargs):  # CIFAR: torchvision's archive fetch
        calls.append((Path(download_root), {"url": url, **kwargs}))
        make_cifar(root, "py")

    if name == "cifar10":
        monkeypatch.setattr(tvu, "download_and_extract_archive", fake_archive)
    else:
        monkeypatch.setattr(tvd, TORCHVISION_CLASS[name], fake_class)
    ds = build_dataset(f"{name}:{root}", "val", 16, download=True)
    assert len(ds) > 0 and len(calls) == 1 and calls[0][0] == root
    if name == "cifar10":
        assert calls[0][1]["url"] == tvd.CIFAR10.url and calls[0][1]["md5"] == tvd.CIFAR10.tgz_md5
    else:
        assert calls[0][1]["download"] is True
    build_dataset(f"{name}:{root}", "train", 16, download=True)
    assert len(calls) == 1  # present now: not fetched again


@pytest.mark.parametrize("name", sorted(NAMED_DATASETS))
def test_missing_data_says_where_it_looked_and_to_download(tmp_path, name):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError) as err:
        build_dataset(f"{name}:{tmp_path / 'empty'}", "val", 16)
    msg = str(err.value)
    assert str(tmp_path / "empty") in msg and "looked for" in msg and "download=True" in msg
    assert isinstance(err.value, FileNotFoundError) and "\n" not in msg


def test_failed_download_is_one_line_naming_the_dataset(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise RuntimeError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(tvd, "OxfordIIITPet", offline)
    with pytest.raises(DataError, match=r"downloading Oxford-IIIT Pet into .* failed: <urlopen"):
        build_dataset(f"oxford-pets:{tmp_path / 'p'}", "val", 16, download=True)


def test_spec_errors_name_the_spec_and_the_valid_choices(tmp_path, pets):
    with pytest.raises(
        DataError, match=r"unknown dataset 'oxford-pet'; closest valid: \['oxford-pets'"
    ):
        build_dataset(f"oxford-pet:{pets}", "val", 16)
    with pytest.raises(DataError, match=r"expected cifar10:PATH"):
        build_dataset("cifar10:", "val", 16)
    with pytest.raises(DataError, match=r"oxford-pets has no option 'bordr'; its options: \["):
        build_dataset(f"oxford-pets:{pets}", "val", 16, bordr="object")
    with pytest.raises(DataError, match="masks_root"):
        build_dataset(f"oxford-pets:{pets}", "val", 16, masks_root=tmp_path)
    with pytest.raises(DataError, match="nothing to download"):
        build_dataset(tmp_path, "val", 16, download=True)
    assert canonical_spec(f"oxford-pets:{os.path.relpath(pets)}") == f"oxford-pets:{pets.resolve()}"


# --------------------------------------------------------- compare, CLI, training


def test_compare_scores_localisation_against_the_trimaps(pets):
    from attnviz import compare, insert_attention
    from attnviz.nets import small_resnet

    torch.manual_seed(0)
    base = small_resnet(3, widths=(8, 16)).eval()
    se = insert_attention(base, "se", example_input=torch.randn(1, 3, 32, 32))
    data = build_dataset(f"oxford-pets:{pets}", "val", 32)
    result = compare({"a": base, "b": se}, data, faithfulness=False, progress=False)
    rows = result.summary()
    assert rows[0]["pointing_game"] is not None and 0 <= rows[0]["pointing_game"] <= 1
    assert rows[1]["energy_pointing_game"] is not None


RECIPE = """
name: {name}
base: attnviz:small_resnet
base_kwargs: {{num_classes: 3, widths: [8, 16]}}
attention: {attention}
input_size: [3, 32, 32]
"""


@pytest.fixture
def recipes(tmp_path):
    paths = []
    for name, attention in (("tiny", "none"), ("tiny-se", "se")):
        p = tmp_path / f"{name}.yaml"
        p.write_text(RECIPE.format(name=name, attention=attention))
        paths.append(str(p))
    return paths


def test_cli_compare_downloads_and_reports_localisation(tmp_path, recipes, monkeypatch, capsys):
    import torchvision.datasets as tvd

    from attnviz.cli import main

    root = tmp_path / "pets"
    seen = []
    monkeypatch.setattr(
        tvd, "OxfordIIITPet", lambda r, **kw: seen.append(kw["download"]) or make_pets(root)
    )
    out = tmp_path / "cmp"
    argv = ["compare", *recipes, "--data", f"oxford-pets:{root}", "--out", str(out)]
    argv += ["--no-faithfulness", "--images", "4", "--names", "a", "b", "--download"]
    assert main(argv) == 0, capsys.readouterr().err
    assert seen == [True]
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["a", "b"]
    assert all(r["pointing_game"] not in ("", None) for r in rows)
    assert json.loads((out / "comparison.json").read_text())["models"] == ["a", "b"]


def test_cli_compare_missing_data_is_one_error_line(tmp_path, recipes, capsys):
    from attnviz.cli import main

    argv = ["compare", *recipes, "--data", f"voc-seg:{tmp_path}", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--download" in err and str(tmp_path) in err


def test_train_on_pets_and_the_download_flag(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    from attnviz.cli.train import main

    root = tmp_path / "pets"
    seen = []
    monkeypatch.setattr(
        tvd, "OxfordIIITPet", lambda r, **kw: seen.append(kw["download"]) or make_pets(root)
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(name="tiny", attention="se"))
    argv = [
        "--recipe",
        str(recipe),
        "--data",
        f"oxford-pets:{root}",
        "--out",
        str(tmp_path / "run"),
    ]
    argv += ["--epochs", "1", "--set", "batch_size=4", "--no-progress", "--no-tensorboard"]
    assert main([*argv, "--download"]) == 0
    assert seen == [True]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["identity"]["data"] == f"oxford-pets:{root.resolve()}"
