"""R_lang: is the completion written only in the expected script?

The paper's language reward is a rule: 1 if the output uses only the
expected language's script, 0 if it mixes in another. Without it the
semantic reward lets outputs drift into mixed-language text that an
embedding model still finds similar.

The check looks at letters only. A character counts when its Unicode
category is a letter (L*) or a combining mark (M*): Tibetan vowel signs and
subjoined consonants are marks (Mn), and a mark belongs to the script of its
code-point block. Digits, punctuation, symbols and whitespace are ignored, so
"2024年。" is Chinese. The Tibetan tsheg (U+0F0B) and shad (U+0F0D) are
punctuation (Po) and are ignored like any other punctuation. Marks from the
generic combining blocks (U+0300-U+036F, ...) carry the script "Inherited"
and are accepted with any script, since they attach to whatever letter they
follow.

A text with no letters at all (empty, only digits or punctuation) is not
written in any script and earns 0: an empty output must not collect the
language reward.
"""

from __future__ import annotations

import bisect
import unicodedata

import numpy as np

from rewards.base import RewardOutput, check_batch, example_field
from rewards.errors import RewardError

# Script -> inclusive code-point ranges. Blocks, not the full Unicode Script
# property: close enough for deciding which writing system a letter is from.
SCRIPT_RANGES: dict[str, tuple[tuple[int, int], ...]] = {
    "Latin": (
        (0x0041, 0x005A),  # A-Z
        (0x0061, 0x007A),  # a-z
        (0x00AA, 0x00AA),  # feminine ordinal
        (0x00BA, 0x00BA),  # masculine ordinal
        (0x00C0, 0x00D6),  # Latin-1 letters (U+00D7 is the multiplication sign)
        (0x00D8, 0x00F6),  # (U+00F7 is the division sign)
        (0x00F8, 0x00FF),
        (0x0100, 0x024F),  # Latin Extended-A and -B
        (0x0250, 0x02AF),  # IPA Extensions
        (0x1E00, 0x1EFF),  # Latin Extended Additional (Vietnamese)
        (0x2C60, 0x2C7F),  # Latin Extended-C
        (0xA720, 0xA7FF),  # Latin Extended-D
        (0xAB30, 0xAB6F),  # Latin Extended-E
        (0xFF21, 0xFF3A),  # fullwidth A-Z
        (0xFF41, 0xFF5A),  # fullwidth a-z
    ),
    "Greek": ((0x0370, 0x03FF), (0x1F00, 0x1FFF)),
    "Cyrillic": ((0x0400, 0x052F), (0x1C80, 0x1C8F), (0x2DE0, 0x2DFF), (0xA640, 0xA69F)),
    "Hebrew": ((0x0590, 0x05FF), (0xFB1D, 0xFB4F)),
    "Arabic": (
        (0x0600, 0x06FF),
        (0x0750, 0x077F),
        (0x08A0, 0x08FF),
        (0xFB50, 0xFDFF),  # presentation forms A
        (0xFE70, 0xFEFF),  # presentation forms B
    ),
    "Devanagari": ((0x0900, 0x097F), (0xA8E0, 0xA8FF)),
    "Thai": ((0x0E00, 0x0E7F),),
    "Tibetan": ((0x0F00, 0x0FFF),),
    "Mongolian": ((0x1800, 0x18AF),),
    "Hangul": (
        (0x1100, 0x11FF),  # Jamo
        (0x3130, 0x318F),  # compatibility Jamo
        (0xA960, 0xA97F),
        (0xAC00, 0xD7AF),  # syllables
        (0xD7B0, 0xD7FF),
        (0xFFA0, 0xFFDC),  # halfwidth
    ),
    "Hiragana": ((0x3040, 0x309F),),
    "Katakana": ((0x30A0, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F)),
    "Bopomofo": ((0x3100, 0x312F), (0x31A0, 0x31BF)),
    "Han": (
        (0x3005, 0x3007),  # iteration mark, closing mark, ideographic zero
        (0x3400, 0x4DBF),  # CJK Unified Ideographs Extension A
        (0x4E00, 0x9FFF),  # CJK Unified Ideographs
        (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
        (0x20000, 0x2FA1F),  # Extensions B-F and the compatibility supplement
        (0x30000, 0x323AF),  # Extensions G and H
    ),
    "Yi": ((0xA000, 0xA4CF),),
    "Inherited": (
        (0x0300, 0x036F),  # combining diacritical marks
        (0x1AB0, 0x1AFF),
        (0x1DC0, 0x1DFF),
        (0x20D0, 0x20FF),
        (0xFE00, 0xFE0F),  # variation selectors
        (0xFE20, 0xFE2F),
    ),
}

# Marks of this pseudo-script attach to any letter, so every script accepts them.
INHERITED = "Inherited"

# Language code (ISO 639-1) -> scripts its text may use. Extend it with the
# `scripts` argument of LanguageConsistencyReward, or per example with
# example["target_scripts"].
LANGUAGE_SCRIPTS: dict[str, tuple[str, ...]] = {
    "bo": ("Tibetan",),
    "zh": ("Han",),
    "en": ("Latin",),
    "fr": ("Latin",),
    "de": ("Latin",),
    "es": ("Latin",),
    "vi": ("Latin",),
    "ja": ("Han", "Hiragana", "Katakana"),
    "ko": ("Hangul", "Han"),
    "ru": ("Cyrillic",),
    "uk": ("Cyrillic",),
    "ar": ("Arabic",),
    "ug": ("Arabic",),
    "he": ("Hebrew",),
    "el": ("Greek",),
    "hi": ("Devanagari",),
    "th": ("Thai",),
    "ii": ("Yi",),
}


def _sorted_ranges() -> tuple[list[int], list[tuple[int, int, str]]]:
    """The range table flattened and sorted by start, for binary search."""
    ranges = sorted(
        (start, end, script) for script, spans in SCRIPT_RANGES.items() for start, end in spans
    )
    return [start for start, _, _ in ranges], ranges


_RANGE_STARTS, _RANGES = _sorted_ranges()


def script_of(char: str) -> str | None:
    """The script whose range holds this character's code point, else None."""
    code_point = ord(char)
    index = bisect.bisect_right(_RANGE_STARTS, code_point) - 1
    if index >= 0:
        start, end, script = _RANGES[index]
        if start <= code_point <= end:
            return script
    return None


def is_letter(char: str) -> bool:
    """Letters (L*) and combining marks (M*) are what decides the script."""
    return unicodedata.category(char)[0] in "LM"


def is_consistent(text: str, allowed_scripts: tuple[str, ...]) -> bool:
    """True iff the text has a letter and every letter is in an allowed script.

    Letters are characters of category L* or M*; everything else is ignored.
    "Inherited" combining marks are accepted with any script.
    """
    allowed = set(allowed_scripts) | {INHERITED}
    letters = [char for char in text if is_letter(char)]
    return bool(letters) and all(script_of(char) in allowed for char in letters)


def primary_language(code: str) -> str:
    """"zh-Hans", "zh_CN", "ZH" -> "zh": the language subtag, lower-cased."""
    return code.replace("_", "-").split("-")[0].lower()


def scripts_for_language(code: str, table: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Scripts of a language code: exact match first, then its primary subtag."""
    for key in (code, primary_language(code)):
        if key in table:
            return table[key]
    raise RewardError(
        f"no script is known for target language {code!r}; known codes: {sorted(table)}. "
        "Pass the scripts explicitly (example['target_scripts'] or the reward's `scripts`)."
    )


class LanguageConsistencyReward:
    """R_lang: 1.0 if the completion uses only the target language's scripts, else 0.0.

    values[i] = 1[is_consistent(completion_i, scripts(example_i))]   [N]
    The scripts come from example["target_scripts"] when present, otherwise
    from the table entry for example["target_lang"].
    """

    def __init__(
        self, name: str = "language", scripts: dict[str, tuple[str, ...]] | None = None
    ) -> None:
        self.name = name
        self.scripts = dict(LANGUAGE_SCRIPTS if scripts is None else scripts)
        for code, names in self.scripts.items():
            check_script_names(names, f"language {code!r}")

    def __call__(
        self, prompts: list[str], completions: list[str], examples: list[dict]
    ) -> RewardOutput:
        check_batch(prompts, completions, examples)
        values = np.array(
            [
                float(is_consistent(completion, self._allowed_scripts(example)))
                for completion, example in zip(completions, examples)
            ]
        )
        return RewardOutput(values=values, components={self.name: values})

    def _allowed_scripts(self, example: dict) -> tuple[str, ...]:
        if "target_scripts" in example:
            given = example["target_scripts"]
            scripts = (given,) if isinstance(given, str) else tuple(given)
            check_script_names(scripts, "example['target_scripts']")
            return scripts
        return scripts_for_language(example_field(example, "target_lang", self.name), self.scripts)


def check_script_names(scripts: tuple[str, ...], where: str) -> None:
    """RewardError if a script name is not in SCRIPT_RANGES."""
    unknown = [name for name in scripts if name not in SCRIPT_RANGES]
    if unknown or not scripts:
        raise RewardError(
            f"{where}: unknown or missing script names {unknown}; known: {sorted(SCRIPT_RANGES)}"
        )
