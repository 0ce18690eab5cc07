"""Test support, never imported by the package itself: tiny, offline, randomly initialised causal LMs
with a real BPE tokenizer, for tests, benchmarks and demos.

The tokenizer is a byte-level BPE trained deterministically on a small built-in English corpus;
it speaks ChatML with the same chat template behaviour as SmolLM2-Instruct.
"""
from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
BEGIN_OF_TEXT = "<|begin_of_text|>"

# SmolLM2-Instruct's template: ChatML with a default system turn when none is given.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = """\
The user asked for a short answer, and the assistant gave a long one. A good response fits the person who reads it.
Some people prefer direct answers with clear steps; others enjoy stories, humor and a friendly tone.
When a reader is an expert, the response can use technical words and skip the basics.
When a reader is a beginner, the response should explain each idea slowly and give simple examples.
Preference data records which of two responses a person chose and which one they rejected.
A model learns from many such pairs to write answers that more people would choose.
Every user is different: one values brevity, another values detail, a third values warmth and empathy.
The history of a user, such as the posts they wrote and the comments they left, says a lot about their taste.
We can summarize that history as a profile: a list of preferences like concise, formal, or playful.
Alignment accuracy counts how often the model gives the chosen response a higher reward than the rejected one.
Write a poem about the sea. Explain how a bicycle works. Give me three tips for learning to cook.
What is the capital of France? Paris is the capital of France, and it is known for art, food and history.
How do I fix a slow computer? First, close programs you do not need. Then check the disk and restart the machine.
Tell me a joke about cats. Why did the cat sit on the computer? Because it wanted to keep an eye on the mouse!
Can you recommend a book for a long train ride? A mystery novel keeps the pages turning and the hours short.
The weather today is sunny and warm, with a light breeze from the west and a few clouds in the afternoon.
In the morning she walks the dog, reads the news, and drinks a cup of coffee before work starts at nine.
Students often learn best when they practice a little every day instead of studying all night before a test.
The recipe needs two eggs, a cup of flour, half a cup of milk, a pinch of salt and some butter for the pan.
Numbers such as 1, 2, 3, 10, 42, 100 and 2025 appear in many questions about dates, prices and measurements.
Please answer politely. Thank you for your help! I really appreciate the detailed explanation you gave me.
Science explains the world with experiments: we form a hypothesis, test it, and keep what the evidence supports.
A persona is a short description of a person: the user is a busy parent who wants quick, practical advice.
Another persona: the user is a curious student who enjoys deep explanations and surprising facts.
The rejected response ignored the question, while the chosen response answered it with care and accuracy.
Training with direct preference optimization compares the policy with a frozen reference model on each pair.
Rankings of several responses give more signal than a single pair, because every position carries information.
Diverse prompts help a model generalize; repeating the same kind of question teaches it less.
Good writing is clear, honest and kind. It respects the time of the reader and answers what was asked.
My grandmother grew tomatoes, beans and peppers in a small garden behind the house near the river.
The city council voted to build a new library with a children's room, a quiet study hall and a cafe.
Running every morning improved his sleep, his mood and his patience with difficult customers at work.
If you want to save money, make a budget, track your spending for a month, and cut one expense at a time.
The history of the Roman Empire covers kings, a republic, emperors, wars, roads, law and a slow decline.
Photosynthesis lets plants turn sunlight, water and carbon dioxide into sugar and the oxygen we breathe.
My favorite movie is an old comedy about two friends who travel across the country in a broken car.
Traveling abroad is easier when you learn a few phrases: hello, please, thank you, and where is the station?
The engineer wrote a function that sorts the list, removes duplicates and returns the first ten items.
Python, JavaScript and Rust are popular programming languages, each with its own strengths and community.
To write a cover letter, introduce yourself, describe one achievement, and explain why the job excites you.
The doctor advised drinking more water, sleeping eight hours, and taking a short walk after every meal.
Music can change how we feel: a slow song calms the mind, while a fast rhythm makes us want to dance.
Children ask why the sky is blue; sunlight scatters in the air, and blue light scatters the most.
A friendly reply might start with a greeting, share a personal note, and end with a warm wish.
A formal reply avoids slang, uses complete sentences, and keeps a respectful distance from the reader.
Sarcasm is risky in writing because the reader cannot hear your voice or see your face.
The team reviewed the results, found a mistake in the data, fixed it, and ran the experiment again.
Markets rise and fall; long term investors diversify, stay patient, and avoid decisions driven by fear.
Climate change brings hotter summers, stronger storms and rising seas, and it affects every country.
The museum opens at ten on weekdays and at noon on Sundays; tickets for students cost half the price.
When you feel stressed, breathe slowly, write down what worries you, and talk with someone you trust.
The chess player sacrificed a knight to open the king, then won the game with a quiet bishop move.
Our neighbor plays the piano every evening, and the whole street listens to the gentle melodies.
Which answer do you prefer, the first or the second? I prefer the second because it is shorter and clearer.
She rejected the first draft as too vague and chose the revised version with concrete examples.
Helpful, harmless and honest: these three words describe what many people want from an assistant.
"""


def tiny_tokenizer(*, adds_bos: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (vocab ≤ 1024) trained on the built-in corpus; ChatML template.

    `adds_bos` makes it Llama-style: BOS `<|begin_of_text|>` is added in front of every text
    encoded with ``add_special_tokens=True``.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        min_frequency=2,
        special_tokens=[ENDOFTEXT, IM_START, IM_END, BEGIN_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS.splitlines(keepends=True), trainer)
    if adds_bos:
        bos_id = tok.token_to_id(BEGIN_OF_TEXT)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BEGIN_OF_TEXT} $A", pair=f"{BEGIN_OF_TEXT} $A $B", special_tokens=[(BEGIN_OF_TEXT, bos_id)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BEGIN_OF_TEXT,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        unk_token=ENDOFTEXT,
        chat_template=CHATML_TEMPLATE,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def _arch_config(arch: str, hidden_size: int, num_heads: int) -> dict:
    head_dim = hidden_size // num_heads
    if arch in ("llama", "qwen2", "mistral"):
        return {"num_key_value_heads": max(1, num_heads // 2)}
    if arch == "gemma2":
        return {
            "num_key_value_heads": max(1, num_heads // 2),
            "head_dim": head_dim,
            "query_pre_attn_scalar": head_dim,
            "sliding_window": 4096,
        }
    raise ValueError(f"unsupported tiny arch {arch!r}; use llama, qwen2, mistral or gemma2")


def tiny_causal_lm(
    tokenizer: PreTrainedTokenizerFast | None = None,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
    arch: str = "llama",
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A randomly initialised causal LM (eval mode, fp32), identical for the same arguments."""
    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
    config = AutoConfig.for_model(
        arch,
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        max_position_embeddings=4096,
        initializer_range=0.1,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **_arch_config(arch, hidden_size, num_heads),
    )
    attn = "eager" if arch == "gemma2" else "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation=attn)
    model.eval()
    return model, tokenizer


def save_tiny(directory: str | Path, **kwargs) -> Path:
    """Save a tiny model (safetensors) and its tokenizer so `load_model(directory)` reads it."""
    directory = Path(directory)
    model, tokenizer = tiny_causal_lm(**kwargs)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory
