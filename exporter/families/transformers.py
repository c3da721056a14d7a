"""transformers family: every ``model_type`` with an ``AutoModel`` base class.

Models are built from ``AutoConfig.for_model(model_type)`` shrunk to a tiny
size (2 layers, hidden 64, 4 heads, vocab 1000...), so a sweep exercises each
architecture's code paths in seconds instead of downloading checkpoints.
Inputs are tokenizer-free tensors chosen from the model's forward signature
and ``main_input_name``: no processor or hub access is needed.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
from typing import Any, Mapping

from exporter.families import FamilyModel, FamilyUnavailable

SOURCE = "transformers"
ENTRYPOINT = "exporter.families.transformers:build"
EXTRA_KEYS: frozenset[str] = frozenset()

# Target sizes of the shrunk configs.
LAYERS, HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN = 2, 64, 4, 2, 16, 128
VOCAB, POSITIONS, SOURCE_POSITIONS, EXPERTS, EXPERTS_PER_TOKEN = 1000, 128, 32, 4, 2
BATCH, SEQ = 2, 16
# Input ids avoid the low ids (pad/bos/eos/decoder_start) and the top ids, where
# out-of-range modality tokens (image_token_id...) are remapped.
FIRST_TEXT_ID, SPECIAL_TOP = 4, 32
AUDIO_SAMPLES = 16000

_LAYER_KEYS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers", "encoder_layers",
               "decoder_layers", "num_decoder_layers", "num_encoder_layers")
_HIDDEN_KEYS = ("hidden_size", "d_model", "n_embd", "dim", "embed_dim", "word_embed_proj_dim",
                "out_hidden_size")
_HEAD_KEYS = ("num_attention_heads", "n_head", "n_heads", "num_heads",
              "encoder_attention_heads", "decoder_attention_heads")
_KV_HEAD_KEYS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "multi_query_group_num")
_HEAD_DIM_KEYS = ("head_dim", "d_kv", "kv_channels", "qk_nope_head_dim",
                  "qk_rope_head_dim", "v_head_dim")
_FFN_KEYS = ("intermediate_size", "ffn_dim", "encoder_ffn_dim", "decoder_ffn_dim", "d_ff",
             "moe_intermediate_size", "shared_expert_intermediate_size")
_EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts")
_EXPERT_TOPK_KEYS = ("num_experts_per_tok", "moe_topk", "top_k")
_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_target_positions")
_FIXED_TOKEN_IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
                    "decoder_start_token_id": 0}

# Which auto-mapping tables mark a model_type as which modality (first hit wins).
_MODALITY_TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("audio", ("MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES", "MODEL_FOR_CTC_MAPPING_NAMES",
               "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES",
               "MODEL_FOR_AUDIO_XVECTOR_MAPPING_NAMES")),
    ("multimodal", ("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES",
                    "MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES",
                    "MODEL_FOR_VISUAL_QUESTION_ANSWERING_MAPPING_NAMES",
                    "MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES",
                    "MODEL_FOR_DOCUMENT_QUESTION_ANSWERING_MAPPING_NAMES")),
    ("vision", ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_IMAGE_MAPPING_NAMES",
                "MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES", "MODEL_FOR_BACKBONE_MAPPING_NAMES",
                "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES",
                "MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES",
                "MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING_NAMES")),
    ("text", ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
              "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
              "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
              "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
              "MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES")),
)
_SEQ2SEQ_TABLES = ("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
                   "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES")


def _modeling_auto() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")   # building from config never needs the hub
    try:
        from transformers.models.auto import modeling_auto
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise FamilyUnavailable(SOURCE) from exc
    return modeling_auto


def _modality(model_type: str, tables: Any) -> str:
    for modality, names in _MODALITY_TABLES:
        if any(model_type in getattr(tables, n, {}) for n in names):
            return modality
    # Sub-model types (qwen2_vl_text, siglip_vision_model...) are in no task table.
    for hint, modality in (("vision", "vision"), ("audio", "audio"), ("text", "text"),
                           ("speech", "audio"), ("asr", "audio"), ("video", "vision")):
        if hint in model_type:
            return modality
    return "other"


@functools.lru_cache(maxsize=1)
def registry() -> dict[str, tuple[str, ...]]:
    """model_type -> tags, for types that have a base model (no config is built)."""
    tables = _modeling_auto()
    found: dict[str, tuple[str, ...]] = {}
    for model_type in sorted(tables.MODEL_MAPPING_NAMES):
        tags = [SOURCE, _modality(model_type, tables)]
        if any(model_type in getattr(tables, n, {}) for n in _SEQ2SEQ_TABLES):
            tags.append("seq2seq")
        found[model_type] = tuple(tags)
    return found


def catalog(extra: Mapping[str, Any]) -> dict[str, FamilyModel]:
    """All model types with a base model, keyed by model_type."""
    return {
        model_type: FamilyModel(name=f"{SOURCE}/{model_type}", entrypoint=ENTRYPOINT,
                                kwargs={"model_type": model_type}, tags=tags)
        for model_type, tags in registry().items()
    }


def explain_missing(name: str, extra: Mapping[str, Any]) -> str | None:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    if name in CONFIG_MAPPING_NAMES:
        return "it has a config but no AutoModel base class"
    return "names are config model_types such as 'bert' or 'gpt2', not checkpoint ids"


# --------------------------------------------------------------------------- config shrinking

def _shrink_ids(value: Any, key: str, remap: dict[str, int]) -> Any:
    """Token ids >= VOCAB would index past the shrunk embedding tables."""
    if isinstance(value, list):
        return [_shrink_ids(v, key, remap) for v in value]
    if not isinstance(value, int) or isinstance(value, bool) or value < VOCAB:
        return value
    if key in _FIXED_TOKEN_IDS:
        return _FIXED_TOKEN_IDS[key]
    if key not in remap:  # modality tokens: distinct ids at the top of the vocab
        remap[key] = VOCAB - 1 - len(remap)
    return remap[key]


def _int_keys(d: Mapping[str, Any], keys: tuple[str, ...]) -> list[str]:
    return [k for k in keys if isinstance(d.get(k), int) and not isinstance(d.get(k), bool)]


def _shrink_sizes(d: Mapping[str, Any], out: dict[str, Any]) -> None:
    """Depth everywhere; widths only for flat transformer configs (one int head count).

    Hierarchical vision configs (per-stage ``depths``/``num_heads`` lists) keep
    their widths, which are tied to each other, and only lose depth.
    """
    for k in _int_keys(d, _LAYER_KEYS):
        out[k] = min(d[k], LAYERS)
    if isinstance(d.get("depths"), list):
        out["depths"] = [1 for _ in d["depths"]]
    head_keys = _int_keys(d, _HEAD_KEYS)
    if head_keys and not isinstance(d.get("depths"), list):
        heads = d[head_keys[0]]
        for k in _int_keys(d, _HIDDEN_KEYS):
            out[k] = HIDDEN
        for k in head_keys:
            out[k] = HEADS
        for k in _int_keys(d, _KV_HEAD_KEYS):
            # Keep the attention kind: MHA stays MHA (MLA and some models insist),
            # multi-query stays multi-query, grouped-query stays grouped.
            out[k] = HEADS if d[k] == heads else 1 if d[k] == 1 else KV_HEADS
        for k in _int_keys(d, _HEAD_DIM_KEYS):
            out[k] = HEAD_DIM
        if "head_dim" in d and d["head_dim"] is None:
            out["head_dim"] = HEAD_DIM                # some RoPE code reads it unguarded
        if isinstance(d.get("expand"), int) and "head_dim" in out:
            out["head_dim"] = HIDDEN * d["expand"] // HEADS   # Mamba2: heads*head_dim = expand*hidden
        for k in _int_keys(d, ("n_groups",)):
            out[k] = 1
        for k in _int_keys(d, _FFN_KEYS):
            out[k] = FFN
        if "dim" in out and isinstance(d.get("hidden_dim"), int):
            out["hidden_dim"] = FFN                   # DistilBERT: hidden_dim is the FFN width
        for k in _int_keys(d, ("kv_lora_rank", "q_lora_rank")):
            out[k] = 32
        for k in _int_keys(d, ("embedding_size", "projection_dim")):
            out[k] = HIDDEN
    for k in _int_keys(d, _EXPERT_KEYS):
        out[k] = min(d[k], EXPERTS)
    for k in _int_keys(d, _EXPERT_TOPK_KEYS):
        out[k] = min(d[k], EXPERTS_PER_TOKEN)
    for k in _int_keys(d, ("first_k_dense_replace", "n_shared_experts", "n_group",
                            "topk_group", "num_expert_group")):
        out[k] = min(d[k], 1)    # DeepSeek routing groups must divide the (fewer) experts
    for k in _int_keys(d, ("vocab_size",)):
        out[k] = min(d[k], VOCAB)
    for k in _int_keys(d, ("rotary_dim",)):
        out[k] = min(d[k], HEAD_DIM)
    for k in _int_keys(d, _POSITION_KEYS):
        out[k] = min(d[k], POSITIONS)
    if _int_keys(d, ("max_source_positions",)) and "num_mel_bins" in d:
        # Whisper-likes: input length is 2 * max_source_positions mel frames.
        out["max_source_positions"] = min(d["max_source_positions"], SOURCE_POSITIONS)


def _shrink_patterns(config: Any, d: Mapping[str, Any], out: dict[str, Any]) -> None:
    """Per-layer lists and RoPE sections that must agree with the new sizes."""
    layer_types = d.get("layer_types")
    if isinstance(layer_types, list) and layer_types and "num_hidden_layers" in out:
        # One layer of each kind (sliding + full, linear + full...) so hybrids stay hybrid.
        kinds = list(dict.fromkeys(map(str, layer_types)))
        kinds += [kinds[-1]] * (LAYERS - len(kinds))
        out["layer_types"], out["num_hidden_layers"] = kinds, len(kinds)
    if isinstance(d.get("attention_types"), list) and "num_layers" in out:
        # GPT-Neo: [[["global", "local"], 12]] expands to one kind per layer.
        pattern = d["attention_types"][0][0]
        out["attention_types"] = [[pattern, max(1, out["num_layers"] // len(pattern))]]
        out["num_layers"] = len(pattern) * out["attention_types"][0][1]
    rope = d.get("rope_parameters")
    if (isinstance(rope, dict) and "mrope_section" not in rope and "vocab_size" in d
            and _uses_mrope(config)):
        # Multimodal RoPE splits head_dim/2 frequencies in 3 sections; the code
        # default ([16, 24, 24] or [8, 12, 12]) only fits the full-size head_dim.
        head_dim = out.get("head_dim") or HIDDEN // HEADS
        half = int(head_dim * rope.get("partial_rotary_factor", 1.0)) // 2
        first = max(1, half // 4)
        out["rope_parameters"] = {**rope, "mrope_section": [
            first, (half - first + 1) // 2, (half - first) // 2]}


def shrink(config: Any) -> dict[str, Any]:
    """Constructor overrides that make ``config`` tiny; recurses into sub-configs.

    Only keys the config already has are touched, and only canonical field
    names are used (aliases from ``attribute_map`` would be re-derived).
    """
    d = config.to_dict()
    out: dict[str, Any] = {}
    _shrink_sizes(d, out)
    _shrink_patterns(config, d, out)
    remap: dict[str, int] = {}
    for k, v in d.items():
        if k.endswith(("_token_id", "_token_index", "_token_ids")) and v is not None:
            new = _shrink_ids(v, k, remap)
            if new != v:
                out[k] = new
    for k in ("use_cache", "use_pretrained_backbone"):
        if k in d:
            out[k] = False   # caches in outputs need pytree registration; backbones download
    for attr in getattr(config, "sub_configs", {}) or {}:
        sub = getattr(config, attr, None)
        if sub is None or not hasattr(sub, "to_dict"):
            continue
        sub_out = shrink(sub)
        sub_out["model_type"] = sub.model_type   # AutoConfig-typed slots need it to dispatch
        out[attr] = sub_out
    return out


@functools.lru_cache(maxsize=None)
def _modeling_source(config_module: str) -> str:
    spec = importlib.util.find_spec(config_module.replace(".configuration_", ".modeling_"))
    if spec is None or not spec.origin:
        return ""
    with open(spec.origin, encoding="utf-8") as f:
        return f.read()


def _uses_mrope(config: Any) -> bool:
    """Whether the model code reads ``rope_parameters['mrope_section']`` (Qwen2-VL style)."""
    try:
        return "mrope_section" in _modeling_source(type(config).__module__)
    except (ImportError, OSError, ValueError):
        return False


def tiny_config(model_type: str) -> Any:
    """``AutoConfig.for_model(model_type)`` shrunk to a few hundred thousand parameters."""
    _modeling_auto()
    from transformers import AutoConfig

    default = AutoConfig.for_model(model_type)
    overrides = shrink(default)
    try:
        config = type(default)(**overrides)
    except Exception:
        types = default.to_dict().get("layer_types")
        if "layer_types" not in overrides or not isinstance(types, list):
            raise
        # Some configs count layers differently (Dory: attention + MLP pairs); a
        # plain prefix of the default layer_types is what their validators accept.
        overrides["num_hidden_layers"] = LAYERS
        overrides["layer_types"] = types[:LAYERS]
        config = type(default)(**overrides)
    if hasattr(config, "use_cache"):
        config.use_cache = False
    return config


# --------------------------------------------------------------------------- inputs

def _size(value: Any, default: int) -> tuple[int, int]:
    if isinstance(value, Mapping):
        h = value.get("height") or value.get("shortest_edge") or default
        return int(h), int(value.get("width") or h)
    if isinstance(value, (list, tuple)) and value:
        return int(value[0]), int(value[-1])
    return (int(value), int(value)) if isinstance(value, int) and value > 0 else (default, default)


def _vision_config(config: Any) -> Any:
    for attr in ("vision_config", "backbone_config", "encoder"):
        sub = getattr(config, attr, None)
        if sub is not None and hasattr(sub, "to_dict"):
            return sub
    return config


def _text_vocab(config: Any) -> int:
    try:
        text = config.get_text_config(decoder=True)
    except Exception:  # configs without a text part
        text = config
    vocab = getattr(text, "vocab_size", None) or getattr(config, "vocab_size", None) or VOCAB
    return int(vocab)


def _input_ids(config: Any, batch: int, seq: int) -> Any:
    import torch
    vocab = _text_vocab(config)
    high = vocab - SPECIAL_TOP if vocab > FIRST_TEXT_ID + 2 * SPECIAL_TOP else vocab
    low = FIRST_TEXT_ID if high > FIRST_TEXT_ID + 1 else 0
    return torch.randint(low, high, (batch, seq), dtype=torch.long)


def _pixel_values(config: Any, batch: int) -> Any:
    import torch
    vision = _vision_config(config)
    h, w = _size(getattr(vision, "image_size", None), 224)
    channels = int(getattr(vision, "num_channels", None) or 3)
    return torch.randn(batch, channels, h, w)


def _audio_features(model: Any, config: Any, batch: int) -> list[Any]:
    """Log-mel feature layouts, most likely first: Whisper's (B, mels, 2*positions)
    when a Conv1d consumes the mel bins, else (B, frames, feats)."""
    import torch
    audio = getattr(config, "audio_config", None) or config
    mels = getattr(audio, "num_mel_bins", None)
    positions = int(getattr(audio, "max_source_positions", None) or SOURCE_POSITIONS)
    feats = (getattr(audio, "feature_projection_input_dim", None)
             or getattr(audio, "input_feat_per_channel", None) or mels
             or getattr(audio, "feature_size", None) or 80)
    feats = int(feats) * int(getattr(audio, "input_channels", 1) or 1)
    channels_last = torch.randn(batch, 64, feats)
    if mels is None:
        return [channels_last]
    # Whisper's encoder checks the length equals 2 * max_source_positions.
    channels_first = torch.randn(batch, int(mels), 2 * positions)
    if any(isinstance(m, torch.nn.Conv1d) and m.in_channels == mels for m in model.modules()):
        return [channels_first, channels_last]
    return [channels_last, channels_first]


def candidate_inputs(model: Any, config: Any, batch: int = BATCH,
                     seq: int = SEQ) -> list[dict[str, Any]]:
    """Plausible tokenizer-free kwargs for ``model.forward``, most likely first.

    The first candidate feeds ``main_input_name`` plus every required input.
    Later ones add a second modality (CLIP-style dual encoders need pixels and
    text although both default to None) or another audio layout.
    """
    import torch

    params = inspect.signature(model.forward).parameters
    required = [n for n, p in params.items() if p.default is inspect.Parameter.empty
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    main = getattr(model, "main_input_name", "input_ids")
    makers: dict[str, Any] = {
        "input_ids": lambda: [_input_ids(config, batch, seq)],
        "pixel_values": lambda: [_pixel_values(config, batch)],
        "input_features": lambda: _audio_features(model, config, batch),
        # Raw waveform: (B, samples) for wav2vec2-likes, (B, 1, samples) for codecs.
        "input_values": lambda: [torch.randn(batch, AUDIO_SAMPLES),
                                 torch.randn(batch, 1, AUDIO_SAMPLES)],
    }
    base: dict[str, Any] = {}
    variants: list[tuple[str, Any]] = []
    for name in dict.fromkeys([main, *required]):
        if name not in makers:
            raise NotImplementedError(
                f"no tokenizer-free input recipe for {type(model).__name__}.forward({name}=...)")
        first, *others = makers[name]()
        base[name] = first
        variants += [(name, other) for other in others]

    def complete(inputs: dict[str, Any]) -> dict[str, Any]:
        if "input_ids" in inputs and "attention_mask" in params:
            inputs["attention_mask"] = torch.ones(batch, seq, dtype=torch.long)
        if getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" in params:
            inputs["decoder_input_ids"] = _input_ids(config, batch, seq)
        return inputs

    candidates = [complete(dict(base))]
    candidates += [complete({**base, name: value}) for name, value in variants]
    for name in ("pixel_values", "input_ids", "input_features", "input_values"):
        if name in params and name not in base:
            candidates.append(complete({**base, name: makers[name]()[0]}))
    return candidates


def pick_inputs(model: Any, candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """First candidate an eval-mode forward accepts; the first one if none does.

    Returning the first candidate on total failure leaves the real eager error
    for the pipeline to record instead of hiding it in the builder.
    """
    import torch

    if len(candidates) == 1:
        return candidates[0]
    was_training = model.training
    model.eval()   # eval: no BatchNorm statistics change, no dropout
    try:
        for inputs in candidates:
            try:
                with torch.no_grad():
                    model(**inputs)
                return inputs
            except Exception:  # noqa: BLE001 - any failure means "try the next recipe"
                continue
        return candidates[0]
    finally:
        model.train(was_training)


def build(model_type: str, batch_size: int = BATCH, seq_len: int = SEQ) -> dict[str, Any]:
    """Tiny random-weight base model of ``model_type`` with matching example kwargs."""
    import torch
    from transformers import AutoModel

    config = tiny_config(model_type)
    model = AutoModel.from_config(config)
    inputs = pick_inputs(model, candidate_inputs(model, config, batch_size, seq_len))
    batch = torch.export.Dim("batch", min=1, max=64)
    # Same Dim object for every input: they all share one batch size.
    return {"model": model, "args": (), "kwargs": inputs,
            "dynamic_shapes": {name: {0: batch} for name in inputs}}
