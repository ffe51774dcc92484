import random

import pytest

EASY = [
    "hi",
    "thanks!",
    "Write a haiku about rain.",
    "What is the capital of Italy?",
    "Tell me a joke.",
]
HARD = [
    "A tank holds 240 litres. Pipe A fills it in 6 hours and pipe B empties it in 10 hours. If both are "
    "opened at 9am and pipe B is closed at noon, at what time is the tank full? Explain step by step.",
    "Prove that every bounded monotone sequence of real numbers converges.",
    "Implement a lock-free queue in C++ and explain why it is linearizable.\n```cpp\nstruct Node { int v; Node* next; };\n```",
    "Solve for all real x: x^4 - 5x^2 + 4 = 0, and show your work.",
]


@pytest.fixture(scope="session")
def synthetic_rows():
    """Labelled prompts where the label follows a real signal (math/code/length), plus noise."""
    rng = random.Random(0)
    rows = []
    for i in range(120):
        hard = i % 2 == 0
        base = rng.choice(HARD if hard else EASY)
        label = 1 if (hard if rng.random() > 0.1 else not hard) else 0
        rows.append(
            {"prompt": f"{base} (case {i})", "label": label, "source": "a" if i % 3 else "b"}
        )
    return rows
