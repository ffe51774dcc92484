from gateway.router.features import FEATURE_NAMES, feature_matrix, message_features


def _f(text, **kw):
    return dict(
        zip(FEATURE_NAMES, message_features([{"role": "user", "content": text}], **kw), strict=True)
    )


def test_one_value_per_name():
    m = feature_matrix(
        [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "x = 3 + 4"}]]
    )
    assert m.shape == (2, len(FEATURE_NAMES))


def test_math_and_code_and_reasoning_markers():
    plain = _f("Tell me about your favourite colour")
    math_ = _f(
        "Solve the equation 3x + 5 = 20 and calculate the total cost of 4 items at $2.50 each."
    )
    code = _f("```python\ndef f(xs):\n    return [x for x in xs if x]\n```\nDebug this function.")
    why = _f("Explain step by step why the sky is blue, then compare it with sunsets.")
    assert (
        math_["math_symbols"] > plain["math_symbols"]
        and math_["log_numbers"] > plain["log_numbers"]
    )
    assert math_["math_words"] > plain["math_words"]
    assert code["has_code_block"] == 1.0 and code["code_words"] > plain["code_words"]
    assert why["reason_words"] > plain["reason_words"]


def test_conversation_depth_and_system_prompt():
    msgs = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    f = dict(zip(FEATURE_NAMES, message_features(msgs), strict=True))
    assert f["has_system"] == 1.0 and f["log_user_turns"] > _f("a")["log_user_turns"]


def test_empty_prompt_is_finite():
    assert all(v == v for v in message_features([{"role": "user", "content": ""}]))
    assert all(v == v for v in message_features([]))
