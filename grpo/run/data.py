"""Task data: JSONL records, prompt templates, and the examples rewards read.

A record is one JSON object per line: `{"source": ..., "target": ..., "id": optional}`,
with optional `"targets": [...]`, every reference translation of the source
(the first is `target`); rewards and metrics take the best over them.
For translation the file's `source`/`target` languages are `data_langs`
(Tibetan and Chinese in the default data); the task's direction may reverse
them. For headline generation `source` is the article and `target` the headline.

Every problem in a file stops the run with the file name and line number.
Nothing is skipped silently.
"""

from __future__ import annotations

import json
from pathlib import Path

from grpo.run.errors import DataError

LANGUAGE_NAMES = {"bo": "Tibetan", "zh": "Chinese", "en": "English"}
TASKS = ("mt", "hg")

INSTRUCTIONS = {
    "mt": "Translate the following {source_name} text into {target_name}. Output only the translation.",
    "hg": "Write a short {target_name} headline for the following news article. Output only the headline.",
}
# Base models without a chat template read a plain completion-style prompt.
PLAIN_TEMPLATES = {
    "mt": "{instruction}\n\n{source_name}: {source}\n{target_name}:",
    "hg": "{instruction}\n\nArticle: {source}\nHeadline:",
}


def read_jsonl(path: str | Path, required: tuple[str, ...] = ("source", "target")) -> list[dict]:
    """Read records, checking each has non-empty string fields `required`.

    Raises DataError naming the file and line for a missing or empty file,
    a non-UTF-8 byte, malformed JSON, a non-object line or a bad field.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file '{path}' does not exist")
    try:
        # utf-8-sig: a byte-order mark, as some Windows editors write, is not part of the first record.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte {err.start}); save the file as UTF-8") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: malformed JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        for field in required:
            value = record.get(field)
            if not isinstance(value, str) or not value.strip():
                problem = "missing" if field not in record else "empty or not a string"
                raise DataError(f"{path}:{number}: field '{field}' is {problem}; each line needs {list(required)}")
        targets = record.get("targets")
        if targets is not None and (not isinstance(targets, list) or not targets
                                    or not all(isinstance(t, str) and t.strip() for t in targets)):
            raise DataError(f"{path}:{number}: field 'targets' must be a non-empty list of non-empty strings")
        record.setdefault("id", f"{path.stem}-{number}")
        records.append(record)
    if not records:
        raise DataError(f"data file '{path}' is empty")
    return records


def split_path(data: str | Path, split: str) -> Path | None:
    """The file of a split: `data/<split>.jsonl` for a folder; a single file is the train split."""
    data = Path(data)
    if data.is_dir():
        candidate = data / f"{split}.jsonl"
        return candidate if candidate.exists() else None
    if split == "train":
        return data
    return None


def render_prompt(tokenizer, instruction: str, plain_prompt: str, prompt_format: str = "auto") -> str:
    """The prompt string the model sees, special tokens included.

    prompt_format "chat" uses the tokenizer's chat template (a user turn plus
    the generation prompt), "plain" the completion-style text, and "auto"
    picks chat when the tokenizer has a template.
    """
    use_chat = prompt_format == "chat" or (prompt_format == "auto" and getattr(tokenizer, "chat_template", None))
    if use_chat:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
        )
    # Base models expect their BOS token, which add_special_tokens=False would drop.
    bos = tokenizer.bos_token or ""
    adds_bos = bos and tokenizer("x").input_ids[:1] == [tokenizer.bos_token_id]
    return (bos if adds_bos else "") + plain_prompt


def make_examples(
    records: list[dict],
    tokenizer,
    task: str = "mt",
    source_lang: str = "bo",
    target_lang: str = "zh",
    data_langs: str = "bo-zh",
    prompt_format: str = "auto",
) -> list[dict]:
    """Turn records into examples: {"id", "prompt", "source", "target", "targets", "target_lang"}.

    For "mt", `data_langs` names the languages of the file's source and target
    fields; a direction that reverses them swaps the fields. `targets` lists
    every reference: the record's `targets` when it has them, else `[target]`
    (a reversed direction has one reference, the file's source).
    """
    if task not in TASKS:
        raise DataError(f"task must be one of {TASKS}, got '{task}'")
    swap = False
    if task == "mt":
        file_source, _, file_target = data_langs.partition("-")
        if (source_lang, target_lang) == (file_target, file_source):
            swap = True
        elif (source_lang, target_lang) != (file_source, file_target):
            raise DataError(
                f"direction {source_lang}->{target_lang} does not match the data's languages "
                f"{file_source}->{file_target} (data_langs='{data_langs}') or their reverse"
            )
    names = {
        "source_name": LANGUAGE_NAMES.get(source_lang, source_lang),
        "target_name": LANGUAGE_NAMES.get(target_lang, target_lang),
    }
    examples = []
    for record in records:
        source, target = (record["target"], record["source"]) if swap else (record["source"], record["target"])
        targets = [target] if swap else record.get("targets", [target])
        instruction = INSTRUCTIONS[task].format(**names)
        chat_instruction = f"{instruction}\n\n{source}"
        plain = PLAIN_TEMPLATES[task].format(instruction=instruction, source=source, **names)
        examples.append(
            {
                "id": record["id"],
                "prompt": render_prompt(tokenizer, chat_instruction, plain, prompt_format),
                "source": source,
                "target": target,
                "targets": targets,
                "target_lang": target_lang,
            }
        )
    return examples


def keep_short_prompts(examples: list[dict], tokenizer, max_prompt_tokens: int, source: str | Path) -> list[dict]:
    """The examples whose prompt has at most `max_prompt_tokens` tokens (0 keeps all); the count is printed.

    Longer examples are left out rather than truncated: cutting a source sentence would change the task.
    """
    if not max_prompt_tokens:
        return examples
    kept = [e for e in examples if len(tokenizer(e["prompt"], add_special_tokens=False).input_ids) <= max_prompt_tokens]
    print(f"{source}: {len(examples) - len(kept)} of {len(examples)} examples have prompts over "
          f"{max_prompt_tokens} tokens and are left out")
    return kept
