"""DPO against TRL's DPOTrainer on the same batch; ln 2 at step 0; bad pairs."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from fms_llm.finetune.chat import CHATML_TEMPLATE, IM_END, IM_START, ChatTemplate
from fms_llm.finetune.common import TrainArgs
from fms_llm.finetune.data import DataError, PreferencePair, arithmetic, preference_pairs, story_qa
from fms_llm.finetune.dpo import dpo, dpo_batch, encode_pair, preference_metrics
from fms_llm.models import Llama
from fms_llm.models.hf import config_from_hf, from_hf_state_dict
from fms_llm.tokenizer import BPETokenizer


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    examples = story_qa(3, seed=1) + arithmetic(3, seed=1)
    pairs = preference_pairs(examples, seed=0)
    t = ChatTemplate()
    corpus = [t.render(e.messages) for e in story_qa(200) + arithmetic(200)]
    tok = BPETokenizer.train(
        corpus, vocab_size=420, special_tokens=[IM_START, IM_END], progress=False
    )
    d = tmp_path_factory.mktemp("dpo")
    tok.save(d / "tokenizer.json")
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_file=str(d / "tokenizer.json"), eos_token=IM_END, pad_token=IM_END
    )
    hf_tok.chat_template = CHATML_TEMPLATE
    torch.manual_seed(0)
    cfg = HFLlamaConfig(
        vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=0, eos_token_id=0, pad_token_id=tok.token_to_id(IM_END),
    )  # fmt: skip
    hf_policy = LlamaForCausalLM(cfg)
    hf_ref = copy.deepcopy(hf_policy)
    with torch.no_grad():  # a reference that differs from the policy: a non-trivial loss
        for p in hf_ref.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ours_policy = Llama(config_from_hf(cfg.to_dict()))
    ours_policy.load_state_dict(from_hf_state_dict(ours_policy.config, hf_policy.state_dict()))
    ours_ref = Llama(config_from_hf(cfg.to_dict()))
    ours_ref.load_state_dict(from_hf_state_dict(ours_ref.config, hf_ref.state_dict()))
    return pairs, tok, hf_tok, hf_policy, hf_ref, ours_policy, ours_ref, d


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
def test_loss_rewards_margin_accuracy_equal_trl_dpo_trainer_within_1e5(setup) -> None:  # type: ignore[no-untyped-def]
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    pairs, tok, hf_tok, hf_policy, hf_ref, ours_policy, ours_ref, d = setup
    ds = Dataset.from_list(
        [
            {
                "prompt": p.prompt,
                "chosen": [{"role": "assistant", "content": p.chosen}],
                "rejected": [{"role": "assistant", "content": p.rejected}],
            }
            for p in pairs
        ]
    )
    args = DPOConfig(
        output_dir=str(d / "trl"), beta=0.1, per_device_train_batch_size=len(pairs),
        report_to="none", use_cpu=True, max_length=None, dataloader_num_workers=0,
        bf16=False, fp16=False, dataset_num_proc=None,
    )  # fmt: skip
    trainer = DPOTrainer(
        model=hf_policy, ref_model=hf_ref, args=args, train_dataset=ds, processing_class=hf_tok
    )
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, batch)
    m = {k: v[-1] for k, v in trainer._metrics["train"].items()}

    encoded = [encode_pair(tok, p) for p in pairs]
    ours = preference_metrics(ours_policy, ours_ref, dpo_batch(encoded, tok.token_to_id(IM_END)))
    assert abs(ours["loss"].item() - loss.item()) <= 1e-5
    assert abs(ours["rewards_chosen"].item() - m["rewards/chosen"]) <= 1e-5
    assert abs(ours["rewards_rejected"].item() - m["rewards/rejected"]) <= 1e-5
    assert abs(ours["margin"].item() - m["rewards/margins"]) <= 1e-5
    assert ours["accuracy"].item() == pytest.approx(m["rewards/accuracies"])
    # the same completion tokens as TRL's tokenisation
    row = trainer.train_dataset[0]
    c, r, n = encoded[0]
    assert c[:n] == row["prompt_ids"]
    assert c[n:] == row["chosen_ids"]
    assert r[n:] == row["rejected_ids"]


def test_loss_is_ln2_at_step_0_and_dpo_raises_the_margin(setup) -> None:  # type: ignore[no-untyped-def]
    pairs, tok, *_, ours_policy, _, _ = setup
    policy = copy.deepcopy(ours_policy)
    ref = copy.deepcopy(ours_policy)
    batch = dpo_batch([encode_pair(tok, p) for p in pairs], tok.token_to_id(IM_END))
    start = preference_metrics(policy, ref, batch)
    assert abs(start["loss"].item() - math.log(2)) <= 1e-6
    assert abs(start["margin"].item()) <= 1e-6
    dpo(
        policy,
        tok,
        pairs,
        TrainArgs(steps=15, batch_size=4, lr=3e-3, warmup_steps=0),
        reference=ref,
    )
    end = preference_metrics(policy, ref, batch)
    assert end["margin"].item() > 0.1
    assert end["loss"].item() < math.log(2)


def test_identical_answers_are_an_error_before_work() -> None:
    with pytest.raises(DataError, match="identical answers"):
        PreferencePair([{"role": "user", "content": "2+2?"}], "4", " 4.")
