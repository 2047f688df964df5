r"""A LLaVA-style vision-language model: image features projected into a language model's input.

**Projecting one modality into another's embedding space.** A decoder-only language model reads
a sequence of vectors in its embedding space $\mathbb{R}^{d}$; token ids are only one way to
make them (rows of the embedding table). A vision encoder turns an image into $N$ vectors in
its own space $\mathbb{R}^{d_v}$. A small trained map $g: \mathbb{R}^{d_v} \to \mathbb{R}^{d}$
(LLaVA 1.5's two-layer MLP, $g(h) = W_2\,\mathrm{GELU}(W_1 h + b_1) + b_2$) puts them into the
language model's space, where they are read as $N$ "soft tokens" in front of the text:

$$x = [\,g(h_1), \dots, g(h_N),\; e(w_1), \dots, e(w_T)\,], \qquad
  \mathcal{L} = -\sum_{t} \log p(w_{t+1} \mid x_{\le N + t}).$$

Only the caption tokens are predicted. With the decoder frozen the language model cannot change
what its words mean: the projector must learn to say the image *in the decoder's own
vocabulary of vectors*. With LoRA ([`apply_lora`][fms_llm.finetune.lora.apply_lora]) the decoder
may also adapt a little, through a low-rank update of its attention.

The decoder is an fms-llm [`GPT`][fms_llm.models.GPT] or Llama used as it is, through its
`inputs_embeds` entry; with no image the model is the decoder, logit for logit.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from fms_llm.finetune.lora import LoRAConfig, LoRALinear, apply_lora, merge_lora
from fms_llm.models import GPT, GPTConfig, Llama, LlamaConfig
from fms_mm._files import load_exact, read_model_dir, write_model_dir
from fms_mm.vision import ViT, ViTConfig
from fms_transformer.kv_cache import KVCache

__all__ = ["VLM", "VLMConfig", "VLMConfigError", "VLMInputError"]


class VLMConfigError(ValueError):
    """An inconsistent vision-language model configuration."""


class VLMInputError(ValueError):
    """Images and captions that do not fit the model (too long for the context, wrong shape)."""


@dataclass
class VLMConfig:
    """How the image becomes soft tokens.

    Attributes:
        projector: `"mlp"` (LLaVA 1.5: Linear, GELU, Linear) or `"linear"` (LLaVA 1).
        projector_hidden: The MLP's hidden width (default the decoder's width).
        image_tokens: `"patches"` (the $N$ patch vectors, LLaVA's choice), `"all"` (with the
            class token too) or `"class"` (the class token alone).
    """

    projector: Literal["mlp", "linear"] = "mlp"
    projector_hidden: int | None = None
    image_tokens: Literal["patches", "all", "class"] = "patches"

    def __post_init__(self) -> None:
        if self.projector not in ("mlp", "linear"):
            raise VLMConfigError(f"projector must be 'mlp' or 'linear', got {self.projector!r}")
        if self.image_tokens not in ("patches", "all", "class"):
            raise VLMConfigError(
                f"image_tokens must be 'patches', 'all' or 'class', got {self.image_tokens!r}"
            )
        if self.projector_hidden is not None and self.projector_hidden < 1:
            raise VLMConfigError(f"projector_hidden must be >= 1, got {self.projector_hidden!r}")


class VLM(nn.Module):
    """A ViT, a projector, and an fms-llm decoder that reads the projected image first.

    Args:
        vision: The image encoder.
        decoder: The language model (kept as given: no weight of it is changed here).
        config: The projector and which image tokens are used.

    Example:
        >>> vit = ViT(ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16,
        ...                     num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
        >>> lm = GPT(GPTConfig(vocab_size=20, n_layers=1, d_model=16, n_heads=2, max_seq_len=12))
        >>> VLM(vit, lm)(torch.zeros(2, 1, 8, 8), torch.zeros(2, 3, dtype=torch.long)).shape
        torch.Size([2, 3, 20])
    """

    def __init__(self, vision: ViT, decoder: GPT, config: VLMConfig | None = None) -> None:
        super().__init__()
        if not isinstance(vision, ViT):
            raise TypeError(f"vision must be an fms_mm ViT, got {type(vision).__name__}")
        if not isinstance(decoder, GPT):
            raise TypeError(
                f"decoder must be an fms_llm GPT or Llama, got {type(decoder).__name__}"
            )
        self.config = c = config if config is not None else VLMConfig()
        self.vision = vision
        self.decoder = decoder
        d_v, d = vision.config.hidden_size, decoder.config.d_model
        if c.projector == "linear":
            self.projector: nn.Module = nn.Linear(d_v, d)
        else:
            h = c.projector_hidden or d
            self.projector = nn.Sequential(nn.Linear(d_v, h), nn.GELU(), nn.Linear(h, d))

    @property
    def n_image_tokens(self) -> int:
        """How many soft tokens an image becomes."""
        n = self.vision.config.num_patches
        return {"patches": n, "all": n + 1, "class": 1}[self.config.image_tokens]

    @property
    def max_text_len(self) -> int:
        """The longest text that fits after the image in the decoder's context."""
        return self.decoder.config.max_seq_len - self.n_image_tokens

    def image_embeds(self, pixel_values: Tensor) -> Tensor:
        """The image as soft tokens in the decoder's space, `(batch, n_image_tokens, d_model)`."""
        h = self.vision(pixel_values)
        h = {"patches": h[:, 1:], "all": h, "class": h[:, :1]}[self.config.image_tokens]
        out: Tensor = self.projector(h)
        return out

    def _inputs(self, pixel_values: Tensor | None, input_ids: Tensor) -> Tensor | None:
        if input_ids.ndim != 2:
            raise VLMInputError(
                f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}"
            )
        if pixel_values is None:
            return None
        if pixel_values.shape[0] != input_ids.shape[0]:
            raise VLMInputError(
                f"{pixel_values.shape[0]} images for {input_ids.shape[0]} token rows"
            )
        if input_ids.shape[1] > self.max_text_len:
            raise VLMInputError(
                f"a caption of {input_ids.shape[1]} tokens after {self.n_image_tokens} image "
                f"tokens is longer than the decoder's context max_seq_len="
                f"{self.decoder.config.max_seq_len} (at most {self.max_text_len} text tokens)"
            )
        text = self.decoder.tok_emb(input_ids)
        return torch.cat([self.image_embeds(pixel_values).to(text.dtype), text], dim=1)

    def forward(self, pixel_values: Tensor | None, input_ids: Tensor) -> Tensor:
        """Next-token logits at the text positions, `(batch, seq, vocab)`.

        With `pixel_values=None` this is the decoder's own forward on `input_ids`.
        """
        embeds = self._inputs(pixel_values, input_ids)
        if embeds is None:
            logits: Tensor = self.decoder(input_ids)
            return logits
        out: Tensor = self.decoder(inputs_embeds=embeds)
        return out[:, self.n_image_tokens :]

    def loss(
        self, pixel_values: Tensor, input_ids: Tensor, targets: Tensor, ignore_index: int = -100
    ) -> Tensor:
        """Mean cross-entropy of `targets` (`(batch, seq)`, `ignore_index` where not scored) at
        the text positions; the image positions are never scored."""
        embeds = self._inputs(pixel_values, input_ids)
        assert embeds is not None
        if targets.shape != input_ids.shape:
            raise VLMInputError(
                f"targets {tuple(targets.shape)} must have the shape of input_ids "
                f"{tuple(input_ids.shape)}"
            )
        pad = targets.new_full((targets.shape[0], self.n_image_tokens), ignore_index)
        loss: Tensor = self.decoder(
            inputs_embeds=embeds, targets=torch.cat([pad, targets], 1), ignore_index=ignore_index
        )
        return loss

    @torch.no_grad()
    def generate(
        self,
        pixel_values: Tensor,
        prompt_ids: Tensor,
        max_new_tokens: int,
        eos_id: int | None = None,
    ) -> Tensor:
        """Greedy continuation of `prompt_ids` after each image, `(batch, <= max_new_tokens)`
        (rows stop at `eos_id`, later positions filled with it)."""
        if max_new_tokens < 1:
            raise VLMInputError(f"max_new_tokens must be >= 1, got {max_new_tokens!r}")
        if prompt_ids.shape[1] + max_new_tokens > self.max_text_len:
            raise VLMInputError(
                f"prompt of {prompt_ids.shape[1]} + {max_new_tokens} new tokens is longer than the "
                f"{self.max_text_len} text tokens the context leaves after the image"
            )
        embeds = self._inputs(pixel_values, prompt_ids)
        assert embeds is not None
        cache = KVCache(self.decoder.n_layers)
        logits = self.decoder(inputs_embeds=embeds, kv_cache=cache)[:, -1]
        out = []
        done = torch.zeros(prompt_ids.shape[0], dtype=torch.bool, device=prompt_ids.device)
        for _ in range(max_new_tokens):
            nxt = logits.argmax(-1)
            if eos_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
                done |= nxt == eos_id
            out.append(nxt)
            if eos_id is not None and bool(done.all()):
                break
            logits = self.decoder(nxt[:, None], kv_cache=cache)[:, -1]
        return torch.stack(out, dim=1)

    # -- what trains ----------------------------------------------------------------------------

    def freeze_decoder(self) -> None:
        """The decoder's weights stop training (LLaVA's first stage)."""
        for p in self.decoder.parameters():
            p.requires_grad_(False)

    def add_lora(self, lora: LoRAConfig) -> list[str]:
        """Freeze the decoder and wrap its targeted linear layers in LoRA adapters."""
        return apply_lora(self.decoder, lora)

    def freeze_vision(self) -> None:
        """The image encoder stops training (a pretrained encoder kept as it is)."""
        for p in self.vision.parameters():
            p.requires_grad_(False)

    # -- files ----------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> Path:
        """`config.json` (the three parts' configs) and `model.safetensors`, atomically; LoRA
        adapters are merged into a copy of the decoder first, so the file holds plain weights."""
        decoder = self.decoder
        if any(isinstance(m, LoRALinear) for m in decoder.modules()):
            decoder = copy.deepcopy(decoder)
            merge_lora(decoder)
        state = {f"vision.{k}": v for k, v in self.vision.to_hf_state_dict().items()}
        state |= {f"projector.{k}": v for k, v in self.projector.state_dict().items()}
        own = decoder.state_dict()
        if decoder.lm_head.weight is decoder.tok_emb.weight:
            own.pop("lm_head.weight", None)
        state |= {f"decoder.{k}": v for k, v in own.items()}
        config: dict[str, Any] = {
            "model_type": "fms_mm_vlm",
            "vision_config": self.vision.config.to_hf(),
            "decoder_config": decoder.config.to_dict(),
            "vlm_config": {
                "projector": self.config.projector,
                "projector_hidden": self.config.projector_hidden,
                "image_tokens": self.config.image_tokens,
            },
        }
        return write_model_dir(directory, config, state)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> VLM:
        """A VLM from a `save_pretrained` directory."""
        cfg, state = read_model_dir(directory)
        source = str(Path(directory) / "config.json")
        if cfg.get("model_type") != "fms_mm_vlm":
            raise VLMConfigError(
                f"{source}: model_type must be 'fms_mm_vlm', got {cfg.get('model_type')!r}"
            )
        dec_cfg = dict(cfg["decoder_config"])
        family = dec_cfg.pop("family")
        tied = "decoder.lm_head.weight" not in state
        dec_cfg["tie_embeddings"] = tied
        decoder: GPT = (
            Llama(LlamaConfig(**dec_cfg)) if family == "llama" else GPT(GPTConfig(**dec_cfg))
        )
        vision = ViT(ViTConfig.from_hf(cfg["vision_config"], source=source))
        model = cls(vision, decoder, VLMConfig(**cfg["vlm_config"]))
        weights = str(Path(directory) / "model.safetensors")
        parts: dict[str, dict[str, Tensor]] = {"vision": {}, "projector": {}, "decoder": {}}
        for k, v in state.items():
            head, _, rest = k.partition(".")
            if head not in parts:
                raise VLMConfigError(f"{weights}: unexpected weight {k!r}")
            parts[head][rest] = v
        vision.load_hf_state_dict(parts["vision"], source=weights)
        load_exact(model.projector, parts["projector"], weights)
        if tied:
            parts["decoder"]["lm_head.weight"] = parts["decoder"]["tok_emb.weight"]
        load_exact(decoder, parts["decoder"], weights)
        return model
