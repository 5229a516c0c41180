"""Tiny random models built in seconds: a Llama target with a byte-level BPE tokenizer, and drafts for it."""
from __future__ import annotations

import sysconfig
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from vllm_ptp.models.checkpoint import save_checkpoint
from vllm_ptp.models.checkpoint import embedding_fingerprint
from vllm_ptp.models.cp_config import CPConfig
from vllm_ptp.models.cp_heads import CPHeads

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def stdlib_text(limit_chars: int = 400_000) -> str:
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, total = [], 0
    for name in ("textwrap.py", "string.py", "json/decoder.py", "heapq.py", "bisect.py", "fnmatch.py", "glob.py"):
        text = (root / name).read_text()
        parts.append(text)
        total += len(text)
        if total > limit_chars:
            break
    return "\n".join(parts)


def build_tiny_target(folder: Path, vocab_size: int = 384, hidden: int = 128, layers: int = 2, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([stdlib_text()], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, bos_token_id=0, eos_token_id=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # sharper than the default init, so greedy text is not one repeated token
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.08)
    model.to(torch.float32).save_pretrained(folder, safe_serialization=True)
    return folder


def build_random_cp(folder: Path, target: Path, num_heads: int = 3, rank: int = 4, seed: int = 0) -> Path:
    target_model = LlamaForCausalLM.from_pretrained(target, dtype=torch.float32)
    embed = target_model.get_input_embeddings().weight
    torch.manual_seed(seed)
    config = CPConfig(hidden_size=embed.shape[1], vocab_size=embed.shape[0], num_heads=num_heads, rank=rank,
                      draft_vocab_size=embed.shape[0], adapter_dim=16,
                      verifier={"name_or_path": str(target), "architectures": ["LlamaForCausalLM"],
                                "embedding_fingerprint": embedding_fingerprint(embed)})
    heads = CPHeads(config)
    with torch.no_grad():
        for p in heads.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.05)
    save_checkpoint(folder, config.to_json(), heads.state_dict(), "Random CP heads for tests.\n")
    return folder


def tiny_teacher(target: Path, folder: Path) -> Path:
    """Teacher data of the tiny target (its continuations of stdlib lines, float32 states), made once per folder."""
    from vllm_ptp.training.ptp_data import TeacherSettings, generate_ptp_teacher_data
    prompts = [[{"role": "user", "content": line}] for line in stdlib_text(60_000).splitlines()[:2400:12]]
    settings = TeacherSettings(target=str(target), aux_layers=[0, 1], max_new_tokens=48, state_dtype="float32")
    return generate_ptp_teacher_data(settings, prompts, folder)


def train_tiny_cp(target: Path, work: Path, rank: int = 4, heads: int = 3, steps: int = 300,
                  teacher: Path | None = None) -> Path:
    from vllm_ptp.training.train_cp import CPTrainArgs, train_cp
    teacher = tiny_teacher(target, teacher or work / "teacher")
    return train_cp(CPTrainArgs(target=str(target), data_dir=str(teacher), out=str(work / "cp"), rank=rank,
                                heads=heads, steps=steps, batch_size=32, adapter_dim=16, save_every=100,
                                eval_fraction=0.1))


def train_tiny_ptp(target: Path, work: Path, slots: int = 4, steps: int = 200, u_embedding: str = "quarter_cos",
                   teacher: Path | None = None) -> Path:
    """A PTP draft distilled from the tiny target (teacher states shared between drafts through `teacher`)."""
    from vllm_ptp.training.train_ptp import PTPTrainArgs, train_ptp
    teacher = tiny_teacher(target, teacher or work / "teacher")
    return train_ptp(PTPTrainArgs(target=str(target), data_dir=str(teacher), out=str(work / "ptp"), slots=slots,
                                  u_embedding=u_embedding, steps=steps, batch_size=8, window=64, anchors=16,
                                  lr=3e-3, draft_vocab_size=256, save_every=100, eval_fraction=0.1))
