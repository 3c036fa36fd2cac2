"""ArrowSupervisedDataset: the same items, errors and counts as SupervisedDataset; the cache and its invalidation."""

import json
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image
from test_data_dataset import BAD, GOOD, NUM_IMAGE_TOKENS, PROCESSOR, TEXT_ONLY, max_length_for, turns, with_

from gamma_mod.data.arrow import CACHE_DIR_NAME, ArrowSupervisedDataset
from gamma_mod.data.dataset import SupervisedDataset
from gamma_mod.data.formats import DataError
from gamma_mod.data.templates import get_template
from gamma_mod.data.tokenizer import build_tokenizer

WORDS = "what is in the image ? two cats . where on a sofa".split()
# Two rounds: longer than max_length_for() allows, so "truncate" cuts it.
TWO_ROUNDS = with_(TEXT_ONLY, id="two",
                   conversations=turns("Where?", "On a sofa.", "What is in the image?", "Two cats."))
RECORDS = [GOOD, *BAD.values(), TEXT_ONLY, with_(GOOD, id="good2"), TWO_ROUNDS]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(WORDS)


@pytest.fixture
def folder(tmp_path):
    Image.new("RGB", (20, 10), (200, 30, 30)).save(tmp_path / "good.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return tmp_path


def write(folder, records, name="data.json"):
    path = folder / name
    path.write_text(json.dumps(records))
    return path


def both(tokenizer, folder, records, **kwargs):
    path = write(folder, records)
    args = (path, folder, tokenizer, PROCESSOR, get_template("vicuna_v1"), NUM_IMAGE_TOKENS, max_length_for(tokenizer))
    return SupervisedDataset(*args, **kwargs), ArrowSupervisedDataset(*args, **kwargs)


def arrow(tokenizer, folder, path, **kwargs):
    return ArrowSupervisedDataset(path, folder, tokenizer, PROCESSOR, get_template("vicuna_v1"), NUM_IMAGE_TOKENS,
                                  max_length_for(tokenizer), **kwargs)


def assert_same(reference, dataset):
    assert len(dataset) == len(reference)
    for i in range(len(reference)):
        a, b = reference[i], dataset[i]
        assert a.keys() == b.keys()
        assert a["sample_id"] == b["sample_id"]
        assert torch.equal(a["input_ids"], b["input_ids"]) and b["input_ids"].dtype == torch.long
        assert torch.equal(a["labels"], b["labels"]) and b["labels"].dtype == torch.long
        if "pixel_values" in a:
            assert torch.equal(a["pixel_values"], b["pixel_values"])
    assert list(dataset.lengths) == list(reference.lengths)
    assert list(dataset.modality_lengths) == list(reference.modality_lengths)
    assert (dataset.skipped, dataset.truncated, dataset.official_masked) == \
           (reference.skipped, reference.truncated, reference.official_masked)


@pytest.mark.parametrize("on_overlong", ["error", "truncate"])
def test_same_items_and_counts_as_supervised_dataset(tokenizer, folder, on_overlong):
    reference, dataset = both(tokenizer, folder, RECORDS, on_bad_record="skip", on_overlong=on_overlong)
    expected_ids = ["good", "text", "good2"] + (["r-long", "two"] if on_overlong == "truncate" else [])
    assert sorted(reference[i]["sample_id"] for i in range(len(reference))) == sorted(expected_ids)
    expected_skips = {reason: 1 for reason in BAD if reason != "too long" or on_overlong == "error"}
    if on_overlong == "error":
        expected_skips["too long"] = 2  # r-long and TWO_ROUNDS
    assert reference.skipped == expected_skips
    assert reference.truncated == (2 if on_overlong == "truncate" else 0)
    assert_same(reference, dataset)
    assert isinstance(dataset.modality_lengths, np.ndarray)  # a view of the Arrow column, not a Python list


def test_error_mode_raises_what_supervised_dataset_raises(tokenizer, folder):
    for reason, record in BAD.items():
        with pytest.raises(DataError) as expected:
            both(tokenizer, folder, [GOOD, record])[0]
        path = write(folder, [GOOD, record])
        for _ in range(2):  # the built start, then the cached start re-raises from the report
            with pytest.raises(DataError) as got:
                arrow(tokenizer, folder, path)
            assert (str(got.value), got.value.reason) == (str(expected.value), reason)


def test_cached_start_reports_the_same_skip_counts(tokenizer, folder, caplog):
    path = write(folder, RECORDS)
    first = arrow(tokenizer, folder, path, on_bad_record="skip")
    assert not first.cached
    assert first.cache_path.parent == folder / CACHE_DIR_NAME
    with caplog.at_level(logging.WARNING, logger="gamma_mod.data.arrow"):
        second = arrow(tokenizer, folder, path, on_bad_record="skip")
    assert second.cached and second.cache_path == first.cache_path
    assert second.skipped == first.skipped == {"missing id": 1, "empty conversations": 1, "bad turns": 1,
                                               "missing image tag": 1, "image tag without image": 1,
                                               "missing image": 1, "corrupt image": 1, "too long": 2}
    assert f"skipped 9 of {len(RECORDS)} records: 2 too long, 1 missing id" in caplog.text
    assert_same(first, second)
    # The same cache serves the error mode: the first bad record, as the build found it.
    with pytest.raises(DataError, match=rf"{path}: record #1: missing 'id'"):
        arrow(tokenizer, folder, path)


def test_changed_json_invalidates_the_cache(tokenizer, folder):
    path = write(folder, [GOOD, TEXT_ONLY])
    first = arrow(tokenizer, folder, path)
    write(folder, [TEXT_ONLY])
    second = arrow(tokenizer, folder, path)
    assert not second.cached and second.cache_path != first.cache_path
    assert [second[i]["sample_id"] for i in range(len(second))] == ["text"]
    # Other key parts: a different max_length or template is a different cache too.
    third = ArrowSupervisedDataset(path, folder, tokenizer, PROCESSOR, get_template("vicuna_v1"), NUM_IMAGE_TOKENS,
                                   max_length_for(tokenizer) + 1)
    assert not third.cached and third.cache_path not in (first.cache_path, second.cache_path)


def test_changed_image_is_checked_again(tokenizer, folder):
    path = write(folder, [GOOD, TEXT_ONLY])
    assert len(arrow(tokenizer, folder, path)) == 2
    (folder / "good.png").write_bytes(b"\x89PNG\r\n\x1a\n now corrupt")
    os.utime(folder / "good.png", ns=(1, 1))
    with pytest.raises(DataError, match=rf"{path}: record good: image file .*good.png is corrupt"):
        arrow(tokenizer, folder, path)
    skipped = arrow(tokenizer, folder, path, on_bad_record="skip")
    assert skipped.cached and skipped.skipped == {"corrupt image": 1}


def test_num_proc_builds_the_same_rows(tokenizer, folder, tmp_path_factory):
    path = write(folder, RECORDS * 3)
    one = arrow(tokenizer, folder, path, on_bad_record="skip", on_overlong="truncate")
    two = arrow(tokenizer, folder, path, on_bad_record="skip", on_overlong="truncate", num_proc=2,
                cache_dir=tmp_path_factory.mktemp("cache"))
    assert not two.cached
    assert_same(one, two)


def test_sampler_takes_the_arrow_column(tokenizer, folder):
    from gamma_mod.train.sampler import ModalityLengthGroupedSampler

    path = write(folder, [GOOD, TEXT_ONLY, TWO_ROUNDS, with_(GOOD, id="g2"), with_(TEXT_ONLY, id="t2")] * 2)
    dataset = arrow(tokenizer, folder, path, on_overlong="truncate")
    column = dataset.modality_lengths
    sampler = ModalityLengthGroupedSampler(column, batch_size=2, world_size=2, seed=3)
    assert sampler.lengths is column  # held as the numpy view, not copied into a list
    assert list(sampler) == list(ModalityLengthGroupedSampler(column.tolist(), batch_size=2, world_size=2, seed=3))


def test_unwritable_cache_folder_is_a_clear_error(tokenizer, folder):
    path = write(folder, [GOOD])
    blocker = folder / "file"
    blocker.write_text("")
    with pytest.raises(DataError, match=rf"{path}: cannot create the dataset cache {blocker / 'sub'} .*data.cache_dir"):
        arrow(tokenizer, folder, path, cache_dir=blocker / "sub")


def test_concurrent_starts_build_once(tokenizer, folder):
    """Ranks starting together: the cache lock lets one build; the other waits and loads it."""
    from concurrent.futures import ThreadPoolExecutor

    path = write(folder, RECORDS)
    with ThreadPoolExecutor(2) as pool:
        starts = list(pool.map(lambda _: arrow(tokenizer, folder, path, on_bad_record="skip"), range(2)))
    assert sorted(d.cached for d in starts) == [False, True]
    assert_same(*starts)


def test_image_runs_collapse_and_expand_by_hand():
    from gamma_mod.data.arrow import collapse_image_runs, expand_image_runs

    img = 9
    ids = [1, img, img, img, 5, img, 6, img, img]  # three runs: 3, 1 and 2 (the last one cut by truncation)
    labels = [-100, -100, -100, -100, 5, -100, 6, -100, -100]
    short_ids, short_labels, runs = collapse_image_runs(ids, labels, img)
    assert short_ids == [1, img, 5, img, 6, img]
    assert short_labels == [-100, -100, 5, -100, 6, -100]
    assert runs == [3, 1, 2]
    full_ids, full_labels = expand_image_runs(torch.tensor(short_ids), torch.tensor(short_labels), runs, img)
    assert full_ids.tolist() == ids and full_labels.tolist() == labels
    assert collapse_image_runs([1, 2], [1, 2], img) == ([1, 2], [1, 2], [])


def test_cache_stores_one_id_per_image(tokenizer, folder):
    reference, dataset = both(tokenizer, folder, [GOOD], on_bad_record="skip")
    row = dataset.data[0]
    full = reference[0]["input_ids"]
    n_image = int((full == dataset.image_id).sum())
    assert n_image == NUM_IMAGE_TOKENS > 1
    assert row["image_runs"] == [NUM_IMAGE_TOKENS]
    assert len(row["input_ids"]) == len(full) - NUM_IMAGE_TOKENS + 1
    assert torch.equal(dataset[0]["input_ids"], full)


@pytest.mark.parametrize("content", ['[]', ' [ ] \n', '[{"id": 1, "v": "x\\u00e9 \\"q\\""} , 3, "s", [1, 2] ]\n',
                                     json.dumps([{"id": "é", "v": [1.5, None]}, {}], indent=2)])
def test_records_stream_as_their_exact_json_text(tmp_path, content):
    from gamma_mod.data.formats import iter_record_texts

    path = tmp_path / "d.json"
    path.write_text(content)
    got = list(iter_record_texts(path))
    assert [record for _, record in got] == json.loads(content)
    assert [json.loads(text) for text, _ in got] == json.loads(content)
    assert all(text in content for text, _ in got)  # slices of the file, not re-serialised


@pytest.mark.parametrize("content,message", [
    ('{"a": 1}', "expected a JSON list of records, got dict"),
    ('[1, 2', r"not valid JSON \(Expecting ',' delimiter: line 1 column 6 \(char 5\)\)"),
    ('[1,]', r"not valid JSON \(Expecting value: line 1 column 4"),
    ('[1] x', r"not valid JSON \(Extra data: line 1 column 5"),
])
def test_a_broken_file_streams_the_error_read_records_gives(tmp_path, content, message):
    from gamma_mod.data.formats import iter_record_texts, read_records

    path = tmp_path / "d.json"
    path.write_text(content)
    for read in (read_records, lambda p: list(iter_record_texts(p))):
        with pytest.raises(DataError, match=rf"{path}: {message}"):
            read(path)


def test_an_empty_list_is_an_empty_dataset(tokenizer, folder):
    dataset = arrow(tokenizer, folder, write(folder, []))
    assert len(dataset) == 0 and dataset.skipped == {} and len(dataset.lengths) == 0
