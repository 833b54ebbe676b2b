"""Vocabularies as data, template ensembles, runtime phrases and the text-embedding cache."""

from __future__ import annotations

import pytest
import torch

from clip2scene_ros.teacher import (
    TextEmbeddingCache,
    Vocabulary,
    VocabularyError,
    create_teacher,
    load_templates,
    load_vocabulary,
)


@pytest.mark.parametrize(
    ("name", "count"), [("nuscenes", 16), ("semantickitti", 19), ("scannet", 20), ("synthetic", 15)]
)
def test_shipped_vocabularies(name, count):
    vocab = load_vocabulary(name)
    assert len(vocab) == count and vocab.ids == list(range(1, count + 1)) and vocab.ignore_index == 0
    assert all(c.names for c in vocab.classes)


def test_synthetic_ids_follow_file_order():
    vocab = load_vocabulary("synthetic")
    assert vocab.class_names[0] == "road" and vocab.class_names[-1] == "barrier"
    assert "person" in vocab.classes[vocab.class_names.index("pedestrian")].names


def test_nuscenes_openscene_details():
    vocab = load_vocabulary("nuscenes", details=True)
    names = dict(zip(vocab.class_names, vocab.prompt_names(), strict=True))
    assert "excavator" in names["construction_vehicle"] and "road" in names["driveable_surface"]


def test_templates():
    assert len(load_templates("default")) == 85
    assert load_templates("scene5")[0] == "there is a {} in the scene."
    assert load_templates(["{} here"]) == ("{} here",)
    with pytest.raises(VocabularyError, match="unknown prompt template set"):
        load_templates("nope")
    with pytest.raises(VocabularyError, match="exactly one"):
        load_templates(["no placeholder"])


def test_vocabulary_errors(tmp_path):
    with pytest.raises(VocabularyError, match="available"):
        load_vocabulary("klingon")
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes: [{names: [x]}]\n")
    with pytest.raises(VocabularyError, match="needs a 'name'"):
        load_vocabulary(bad)
    with pytest.raises(VocabularyError, match="non-empty"):
        Vocabulary.from_names(["ok", ""])


def test_runtime_vocabulary_of_unseen_phrases_encodes(tiny_teacher):
    phrases = ["a purple giraffe on rollerblades", "zebra crossing", "Überführung", "🚲"]
    emb = tiny_teacher.encode_vocabulary(phrases)
    assert emb.shape == (4, tiny_teacher.embed_dim) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4))
    labels = tiny_teacher.predict(torch.zeros(2, 64, 96, 3, dtype=torch.uint8), phrases)
    assert labels.shape == (2, 64, 96) and set(labels.unique().tolist()) <= {1, 2, 3, 4}


def test_synonyms_are_averaged(tiny_teacher):
    single = tiny_teacher.encode_text(["car", "automobile"], templates="street")
    cls = tiny_teacher.encode_vocabulary(Vocabulary.from_names([["car", "automobile"]], templates="street"))
    expected = torch.nn.functional.normalize(single.mean(0), dim=0)
    torch.testing.assert_close(cls[0], expected)


def test_text_cache_hits_persists_and_is_keyed_by_model(tmp_path):
    cache = TextEmbeddingCache(tmp_path / "text")
    torch.manual_seed(0)
    a = create_teacher("c2s-test-vit", random_init=True, text_cache=cache)
    first = a.encode_text(["car", "road"], templates="street")
    assert cache.misses == 2 and len(list((tmp_path / "text").glob("*.safetensors"))) == 2
    again = a.encode_text(["road"], templates="street")
    assert cache.hits >= 1
    torch.testing.assert_close(again[0], first[1])
    # a new process (fresh memory) reads the embedding back from disk
    disk = TextEmbeddingCache(tmp_path / "text")
    a2 = a.with_config()
    a2.text_cache = disk
    torch.testing.assert_close(a2.encode_text(["car"], templates="street")[0], first[0])
    assert disk.hits == 1 and disk.misses == 0
    # other templates or other weights are other keys
    a.encode_text(["car"], templates="plain")
    torch.manual_seed(1)
    b = create_teacher("c2s-test-vit", random_init=True, text_cache=cache)
    assert b.model_id != a.model_id
    misses = cache.misses
    other = b.encode_text(["car"], templates="street")
    assert cache.misses == misses + 1 and not torch.allclose(other[0], first[0])
