import numpy as np
import pytest

from matcher import GalleryIndex, InvalidTemplateError, TemplateFormat, prepare_templates
from matcher.validation import check_shape, fault_message, screen_templates

FMT = TemplateFormat("m", 8)


@pytest.mark.parametrize(
    ("templates", "message"),
    [
        (np.ones((2, 7)), "dimension 7"),
        (np.array([[np.nan] * 8]), "NaN or Inf"),
        (np.array([[np.inf] + [1.0] * 7]), "NaN or Inf"),
        (np.zeros((1, 8)), "zero norm"),
        (np.empty((0, 8)), "empty batch"),
        (np.array([["a"] * 8]), "numeric"),
        (np.ones((2, 2, 8)), "2-d"),
    ],
)
def test_bad_templates_are_refused_and_the_index_is_unchanged(templates, message):
    index = GalleryIndex(FMT)
    index.add([1], np.ones((1, 8)))
    with pytest.raises(InvalidTemplateError, match=message):
        index.add(np.arange(len(templates)), templates)
    with pytest.raises(InvalidTemplateError, match=message.replace("empty batch", "empty batch")):
        index.search(templates, k=1)
    assert index.template_count == 1


def test_id_count_must_match_and_ids_be_non_negative():
    index = GalleryIndex(FMT)
    with pytest.raises(InvalidTemplateError, match="2 record ids given for 3 rows"):
        index.add([1, 2], np.ones((3, 8)))
    with pytest.raises(InvalidTemplateError, match="negative"):
        index.add([-1], np.ones((1, 8)))
    with pytest.raises(InvalidTemplateError, match="k must be"):
        index.search(np.ones((1, 8)), k=0)
    assert index.template_count == 0


def test_cosine_templates_are_normalised_on_the_way_in():
    index = GalleryIndex(FMT)
    index.add([1], np.full((1, 8), 10.0))
    assert index.search(np.full((1, 8), 0.1), k=1).scores[0, 0] == pytest.approx(1.0, abs=1e-6)


def test_a_block_of_many_records_is_screened_row_by_row_with_the_bits_of_one_at_a_time():
    rng = np.random.default_rng(2)
    block = (rng.standard_normal((50, 8)) * rng.uniform(0.01, 100, (50, 1))).astype(np.float32)
    block[7, 3], block[9] = np.nan, 0
    rows, faults = screen_templates(check_shape(block, FMT), FMT)
    assert np.flatnonzero(faults).tolist() == [7, 9]
    assert fault_message(faults[5:10]) == "template 2 contains NaN or Inf"
    assert fault_message(faults[8:10]) == "template 1 has zero norm"
    for i in set(range(50)) - {7, 9}:
        assert np.array_equal(rows[i].view(np.uint32), prepare_templates(block[i], FMT)[0].view(np.uint32))
