"""COCO layout: canvases written and read back bit for bit, pycocotools reads what is written, the reader takes
polygons / RLE / no segmentation, and broken files raise errors naming the file and the annotation."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from groupnorm.experiments.data import coco
from groupnorm.experiments.data.canvases import canvas_set
from helpers import SAMPLE_DATA


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("coco"))
    return out, coco.write_canvas_set(out, "val", 5, 1, SAMPLE_DATA)


def test_write_then_read_gives_the_same_canvases(written):
    out, path = written
    assert path == os.path.join(out, "annotations", "instances_val.json")
    got = coco.read_coco(path)
    want = canvas_set(SAMPLE_DATA, "val", 5, 1)
    assert len(got) == 5 and got.classes == want.classes and got.category_ids == tuple(range(1, 11))
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_array_equal(a.semantic, b.semantic)


def test_pycocotools_reads_what_is_written(written):
    from pycocotools.coco import COCO

    out, path = written
    api = COCO(path)
    want = canvas_set(SAMPLE_DATA, "val", 5, 1)
    assert sorted(api.getImgIds()) == list(range(5))
    for i, c in enumerate(want):
        anns = api.loadAnns(api.getAnnIds(imgIds=[i]))
        assert len(anns) == len(c.labels)
        for a, box, label, m in zip(anns, c.boxes, c.labels, c.masks):
            np.testing.assert_array_equal(api.annToMask(a).astype(bool), m)
            x0, y0, x1, y1 = box
            assert a["bbox"] == [x0, y0, x1 - x0, y1 - y0] and a["category_id"] == label + 1
            assert a["area"] == m.sum()
        img = api.loadImgs([i])[0]
        assert (img["height"], img["width"]) == c.size
        assert np.array_equal(np.asarray(Image.open(os.path.join(out, "val", img["file_name"]))), c.image)


def _user_file(tmp_path, anns, images=None, categories=None):
    root = tmp_path / "mine"
    (root / "annotations").mkdir(parents=True)
    (root / "pics").mkdir()
    Image.fromarray(np.full((10, 12, 3), 200, dtype=np.uint8), mode="RGB").save(root / "pics" / "a.jpg")
    doc = {"images": images if images is not None else [{"id": 7, "file_name": "a.jpg", "height": 10, "width": 12}],
           "annotations": anns,
           "categories": categories if categories is not None else [{"id": 5, "name": "b"}, {"id": 2, "name": "a"}]}
    p = root / "annotations" / "instances_pics.json"
    p.write_text(json.dumps(doc))
    return str(p)


def test_reader_takes_polygons_uncompressed_rle_no_segmentation_and_skips_crowds(tmp_path):
    # uncompressed RLE, column-major: 10 rows; 20 zeros (columns 0-1), then 5 ones (column 2, rows 0-4), rest zeros
    rle = {"size": [10, 12], "counts": [20, 5, 95]}
    anns = [
        {"id": 1, "image_id": 7, "category_id": 5, "bbox": [2, 1, 4, 3],
         "segmentation": [[2, 1, 6, 1, 6, 4, 2, 4]]},
        {"id": 2, "image_id": 7, "category_id": 2, "bbox": [2, 0, 1, 5], "segmentation": rle},
        {"id": 3, "image_id": 7, "category_id": 2, "bbox": [7.5, 6, 2, 2.5]},
        {"id": 4, "image_id": 7, "category_id": 2, "bbox": [0, 0, 3, 3], "iscrowd": 1},
    ]
    s = coco.read_coco(_user_file(tmp_path, anns))
    assert s.classes == ("a", "b") and s.category_ids == (2, 5) and s.image_ids == (7,)
    c = s[0]
    assert c.image.shape == (10, 12) and c.image.dtype == np.uint8 and abs(int(c.image[5, 5]) - 200) <= 2
    np.testing.assert_array_equal(c.labels, [1, 0, 0])
    np.testing.assert_array_equal(c.boxes, [[2, 1, 6, 4], [2, 0, 3, 5], [7.5, 6, 9.5, 8.5]])
    want = np.zeros((10, 12), dtype=bool)
    want[0:5, 2] = True
    np.testing.assert_array_equal(c.masks[1], want)
    box = np.zeros((10, 12), dtype=bool)
    box[6:9, 7:10] = True
    np.testing.assert_array_equal(c.masks[2], box)
    poly = c.masks[0]  # the polygon's square: pycocotools rasterizes the rectangle (2,1)-(6,4)
    assert poly[2, 3] and poly[3, 5] and not poly[6, 3] and not poly[2, 8] and 9 <= poly.sum() <= 20
    assert c.semantic[2, 3] == 2 and c.semantic[7, 8] == 1


@pytest.mark.parametrize("anns,match", [
    ([{"id": 1, "image_id": 8, "category_id": 2, "bbox": [0, 0, 1, 1]}], r"annotation id 1: image_id 8"),
    ([{"id": 1, "image_id": 7, "category_id": 3, "bbox": [0, 0, 1, 1]}], r"annotation id 1: category_id 3"),
    ([{"id": 4, "image_id": 7, "category_id": 2, "bbox": [0, 0, 13, 1]}], r"annotation id 4: bbox .* outside"),
    ([{"id": 4, "image_id": 7, "category_id": 2, "bbox": [0, 0, 1]}], r"annotation id 4: bbox \[0, 0, 1\] must"),
    ([{"id": 4, "image_id": 7, "category_id": 2, "bbox": [0, 0, 1, 1], "segmentation": "x"}],
     r"annotation id 4: segmentation must be"),
    ([{"id": 4, "image_id": 7, "category_id": 2, "bbox": [0, 0, 1, 1], "segmentation": {"size": [3, 3], "counts": "0"}}],
     r"annotation id 4: RLE size \[3, 3\]"),
    ([{"id": 2, "image_id": 7, "category_id": 2, "bbox": [0, 0, 1, 1]}] * 2, r"annotation id 2 appears twice"),
])
def test_broken_annotations_name_the_file_and_annotation(tmp_path, anns, match):
    path = _user_file(tmp_path, anns)
    with pytest.raises(ValueError, match=match) as e:
        coco.read_coco(path)
    assert path in str(e.value)


def test_undecodable_segmentation_and_bad_images_raise_on_read(tmp_path):
    bad = [{"id": 9, "image_id": 7, "category_id": 2, "bbox": [0, 0, 1, 1], "segmentation": [[1, 2, 3]]}]
    path = _user_file(tmp_path, bad)
    with pytest.raises(ValueError, match=r"instances_pics.json: annotation id 9: cannot decode"):
        coco.read_coco(path)[0]
    wrong = [{"id": 7, "file_name": "a.jpg", "height": 11, "width": 12}]
    with pytest.raises(ValueError, match=r"a.jpg: image is 12 x 10 .* says 12 x 11 for image id 7"):
        coco.read_coco(_user_file(tmp_path / "b", [], images=wrong))[0]
    missing = [{"id": 3, "file_name": "nope.png", "height": 10, "width": 12}]
    with pytest.raises(FileNotFoundError, match=r"image id 3: file not found: .*nope.png"):
        coco.read_coco(_user_file(tmp_path / "c", [], images=missing))[0]
    path = _user_file(tmp_path / "d", [])
    open(os.path.join(os.path.dirname(os.path.dirname(path)), "pics", "a.jpg"), "wb").write(b"not an image")
    with pytest.raises(ValueError, match="a.jpg: not a readable image"):
        coco.read_coco(path)[0]


def test_broken_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found: .*absent.json"):
        coco.read_coco(str(tmp_path / "absent.json"))
    p = tmp_path / "annotations" / "instances_x.json"
    p.parent.mkdir()
    p.write_text("{not json")
    with pytest.raises(ValueError, match="instances_x.json: not valid JSON"):
        coco.read_coco(str(p))
    p.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(ValueError, match="instances_x.json: missing or non-list 'categories'"):
        coco.read_coco(str(p))
    q = tmp_path / "other.json"
    q.write_text("{}")
    with pytest.raises(ValueError, match="other.json: pass image_dir"):
        coco.read_coco(str(q))
    p.write_text(json.dumps({"images": [{"id": 1, "file_name": "a", "height": 0, "width": 3}], "annotations": [],
                             "categories": []}))
    with pytest.raises(ValueError, match="image id 1: height=0 must be a positive integer"):
        coco.read_coco(str(p))
