import json

import pytest

from gateway.router.dataset import read_scoring, read_training
from gateway.router.errors import TrainingDataError


def _write(tmp_path, lines):
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return p


def test_all_training_forms(tmp_path):
    p = _write(
        tmp_path,
        [
            {"prompt": "a", "label": 1},
            {"prompt": "b", "label": False, "weight": 2, "source": "app1"},
            "",
            {"messages": [{"role": "user", "content": "c"}], "label": 0.25},
            {"prompt": "d", "weak_score": 6, "strong_score": 9},
            {"prompt": "e", "weak_score": 9, "strong_score": 9},
            {"prompt": "f", "outcomes": {"my-7b": 0, "llama": 1, "gpt-4o": 0.5}},
            {"prompt": "g", "strong_preferred": 0.8, "model": "my-7b"},
            {"prompt": "h", "strong_preferred": 0.3, "label": 1},
        ],
    )
    rows = read_training(p)
    obs = [[(o.arm, o.y) for o in r.observations] for r in rows]
    assert obs == [
        [("needs_strong", 1.0)],
        [("needs_strong", 0.0)],
        [("needs_strong", 0.25)],
        [("needs_strong", 1.0)],
        [("needs_strong", 0.0)],
        [("fails:my-7b", 1.0), ("fails:llama", 0.0), ("fails:gpt-4o", 0.5)],
        [("loses_to_strong:my-7b", 0.8)],
        [("needs_strong", 1.0), ("loses_to_strong:self-hosted", 0.3)],
    ]
    assert rows[1].weight == 2.0 and rows[1].source == "app1" and rows[0].source == "default"
    assert rows[0].messages == [{"role": "user", "content": "a"}]


@pytest.mark.parametrize(
    ("line", "msg"),
    [
        ("{not json", "not valid JSON"),
        ('["a"]', "JSON object"),
        ('{"label": 1}', "missing 'prompt'"),
        ('{"prompt": "a"}', "need 'label'"),
        ('{"prompt": "a", "outcomes": {}}', "'outcomes' must be an object"),
        ('{"prompt": "a", "outcomes": {"m": 2}}', "probability"),
        ('{"prompt": "a", "outcomes": {"m": "right"}}', "must be a number"),
        ('{"prompt": "a", "strong_preferred": 1.5}', "probability"),
        ('{"prompt": "a", "strong_preferred": 0.5, "model": 3}', "'model' must be a string"),
        ('{"prompt": "a", "label": 3}', "probability"),
        ('{"prompt": "a", "label": "yes"}', "must be a number"),
        ('{"prompt": 5, "label": 1}', "string or a non-empty list"),
        ('{"prompt": "a", "label": 1, "weight": -1}', "weight"),
    ],
)
def test_bad_training_lines_name_file_and_line(tmp_path, line, msg):
    p = _write(tmp_path, ['{"prompt": "ok", "label": 1}', line])
    with pytest.raises(TrainingDataError, match=msg) as e:
        read_training(p)
    assert f"{p}:2" in str(e.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(TrainingDataError, match="cannot read data file"):
        read_training(tmp_path / "nope.jsonl")
    with pytest.raises(TrainingDataError, match="no training rows"):
        read_training(_write(tmp_path, [""]))


def test_scoring_input(tmp_path):
    p = _write(
        tmp_path,
        [{"id": 7, "prompt": "x"}, {"id": "a", "messages": [{"role": "user", "content": "y"}]}],
    )
    assert [i for i, _ in read_scoring(p)] == [7, "a"]
    with pytest.raises(TrainingDataError, match="missing 'id'"):
        list(read_scoring(_write(tmp_path, [{"prompt": "x"}])))
