import numpy as np
import pytest

from matcher import GalleryIndex, InvalidTemplateError, TemplateFormat

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
