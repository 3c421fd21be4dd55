"""A stateful multi-turn chat for humans, thin over the pure sampler core.

It keeps one row's KV cache between turns: each :meth:`ChatSession.send` appends only the new
user turn (and its video, if any) and decodes the reply; nothing is re-prefilled.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vital_jax.prompt.render import ChatRenderer, Message, Vision
from vital_jax.rollout.sampler import Sampler, SamplerError, SamplingOptions, Segment


class ChatSession:
    """Multi-turn chat over a batch-1 :class:`Sampler` (fixed ``cache_length``: no recompiles).

    Example::

        from vital_jax import load_pretrained
        from vital_jax.models.families import package_of
        from vital_jax.prompt import ChatRenderer, load_tokenizer
        from vital_jax.rollout import ChatSession, Sampler, SamplerConfig, SamplingOptions
        from vital_jax.video import load_video

        cfg, params = load_pretrained("ckpt/")
        chat = ChatSession(Sampler(cfg, params, SamplerConfig(batch_size=1, cache_length=8192)),
                           ChatRenderer(load_tokenizer("ckpt/")), SamplingOptions(max_new_tokens=256))
        video = load_video("match.mp4", processing=package_of(cfg).vision_processing(cfg))   # its patches
        print(chat.send("Who scores first?", visual=video, duration=float(video.frame_times[-1])))
        print(chat.send("And how?"))          # appended to the same cache
        chat.reset()                          # forget everything

    Args:
      sampler: a Sampler with ``batch_size == 1``.
      renderer: the prompt renderer of the checkpoint's tokenizer.
      options: sampling options (``<|im_end|>`` is always a stop token).
      seed: RNG seed of the row.
    """

    def __init__(self, sampler: Sampler, renderer: ChatRenderer, options: SamplingOptions = SamplingOptions(),
                 seed: int = 0):
        if sampler.config.batch_size != 1:
            raise SamplerError(f"ChatSession needs a batch-1 sampler, got batch_size={sampler.config.batch_size}")
        self.sampler, self.renderer, self.seed = sampler, renderer, seed
        eos = renderer.tok.special.eos
        self.options = dataclasses.replace(options, stop_token_ids=tuple({*options.stop_token_ids, eos}))
        self.reset()

    def reset(self) -> None:
        self.state = None
        self.ids: list[int] = []          # the whole conversation so far
        self._closed = True               # last assistant turn ended with <|im_end|>

    def send(self, text: str, visual=None, duration: float | None = None) -> str:
        """Append a user turn (optionally with a video/image) and return the assistant's reply."""
        # a family that writes a video's time as text (Qwen3-VL) gets its "<t seconds>" stamps
        stamps = bool(self.sampler.family.TEXT_TIMESTAMPS)
        vision = None if visual is None else Vision.of(visual, text_timestamps=stamps)
        if self.state is None:
            ids = list(self.renderer.prompt(text, vision, duration=duration, use_tool=False).ids)
        else:
            parts = (text,) if vision is None else (vision, text)
            close = [] if self._closed else self.renderer.end_of_turn_ids()
            ids = close + self.renderer.text_ids("\n") + list(
                self.renderer.render([Message("user", parts)], add_generation_prompt=True).ids)
        seg = Segment(ids, [] if visual is None else [visual])
        if self.state is None:
            self.state = self.sampler.prefill([seg], seeds=self.seed)
        else:
            self.state = self.sampler.extend(self.state, [seg])
        self.ids += ids
        self.state, out = self.sampler.generate(self.state, self.options)
        reply = out.tokens[0].tolist()
        self.ids += reply
        eos = self.renderer.tok.special.eos
        self._closed = bool(reply) and reply[-1] == eos
        return self.renderer.tok.decode(reply[:-1] if self._closed else reply)

    @property
    def num_tokens(self) -> int:
        return len(self.ids)

    def history_ids(self) -> np.ndarray:
        return np.asarray(self.ids, np.int32)
