"""Fine-tuning: from a pretrained language model to an assistant.

- [fms_llm.finetune.chat][]: the ChatML template (Hugging Face `chat_template` form) and the
  assistant mask;
- [fms_llm.finetune.data][]: instructions with exact answers, held-out splits, preference pairs,
  the verifiable reward, chatterbot-corpus dialogues;
- [fms_llm.finetune.sft][]: supervised fine-tuning on assistant tokens;
- [fms_llm.finetune.lora][]: LoRA and QLoRA adapters, merged into float weights;
- [fms_llm.finetune.dpo][]: Direct Preference Optimisation;
- [fms_llm.finetune.grpo][]: Group Relative Policy Optimisation;
- [fms_llm.finetune.common][]: run settings, masked log-probabilities, the training loop.
"""

from fms_llm.finetune.chat import CHATML_TEMPLATE, ChatError, ChatTemplate
from fms_llm.finetune.common import FinetuneError, TrainArgs
from fms_llm.finetune.dpo import dpo, dpo_loss
from fms_llm.finetune.grpo import group_advantages, grpo, grpo_loss
from fms_llm.finetune.lora import LoRAConfig, LoRAError, apply_lora, merge_lora
from fms_llm.finetune.sft import accuracy, sft

__all__ = [
    "CHATML_TEMPLATE",
    "ChatError",
    "ChatTemplate",
    "FinetuneError",
    "LoRAConfig",
    "LoRAError",
    "TrainArgs",
    "accuracy",
    "apply_lora",
    "dpo",
    "dpo_loss",
    "group_advantages",
    "grpo",
    "grpo_loss",
    "merge_lora",
    "sft",
]
