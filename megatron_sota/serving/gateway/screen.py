"""The prompt-injection screen: rules (as data) over the prompt text, returning every finding at once.

Rule-based and offline; it must not rewrite the prompt the upstream receives, only say why it should be refused.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

# Role and special tokens of the common chat templates (ChatML, Llama 2/3, Mistral, Phi, Gemma, GPT-2); a prompt that
# spells one can forge a turn. `<|...|>` markers of any name are caught by the "chat_marker" rule below as well.
DEFAULT_SPECIAL_TOKENS = (
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>",
    "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
    "<s>", "</s>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "<start_of_turn>", "<end_of_turn>",
)

# (rule, characters): checked on the raw text, before normalisation removes them.
CHARACTER_RULES = (
    ("unicode_tag_character", "[\U000e0000-\U000e007f]"),
    ("bidi_control", "[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"),
    # U+200D joins emoji (family, flags) and is only suspicious inside words.
    ("invisible_character", "[\u00ad\u180e\u200b\u200c\u2060-\u2064\ufeff]|(?<=\\w)\u200d|\u200d(?=\\w)"),
)

# (rule, pattern): checked on the normalised text (NFKC, casefolded, invisibles removed, whitespace collapsed).
_Q = r"(?:all |any |the |your |my |of |these |those |prior |every )*"  # filler words between verb and object
_EARLIER = r"(?:previous|prior|above|earlier|preceding|initial|original|system|former|old)"
_RULES_WORD = r"(?:instructions?|prompts?|rules|directions|guidelines|directives|messages?|context|constraints)"
# "the system prompt variable" (PS1 in a shell) is a shell question, not a request for ours.
_SECRET = r"(?:(?:system|initial|original|hidden|secret|developer|first) ?){1,3}(?:prompt|instructions?|message|rules|directives)(?! variable| string)"
PHRASE_RULES = (
    ("instruction_override", rf"\b(?:ignore|disregard|forget|skip|override|bypass|drop) {_Q}{_EARLIER} {_RULES_WORD}"),
    ("instruction_override", r"\b(?:disregard|ignore|forget) (?:all of |everything )?(?:the )?(?:above|before this|you were told)"),
    ("instruction_override", r"\byou are now (?:an? |in |my |the )?(?:\w+ ){0,2}(?:ai|assistant|model|bot|mode|dan|persona|character|chatbot)\b"),
    ("instruction_override", r"\b(?:developer|dan|jailbreak|god|unrestricted) mode (?:is )?(?:now )?(?:enabled|activated)\b"),
    ("instruction_override", r"\b(?:enter|activate|enable|switch (?:in)?to|you are in|act in) (?:dan|jailbreak|god|unrestricted|developer) mode\b(?! on (?:android|chrome|windows|iphone|ios|your))"),
    ("instruction_override", r"\bdo anything now\b"),
    ("instruction_override", r"(?:^|[.!\n] ?)(?:new|updated|revised|real) (?:system )?instructions ?:"),
    ("instruction_override", r"\bsystem (?:prompt )?override\b"),
    ("instruction_override", r"\bpretend (?:that )?you (?:have no|are not bound by|don't have|do not have) (?:\w+ )?(?:restrictions|rules|guidelines|filters|limits)"),
    ("system_prompt_exfiltration", rf"\b(?:repeat|print|show|reveal|display|output|tell me|give me|leak|dump|write out|recite|spell out|paste|share) (?:me )?(?:back )?{_Q}{_SECRET}"),
    ("system_prompt_exfiltration", r"\bwhat (?:were|are|was|is) (?:your|the) (?:initial |original |system |hidden |secret |first |exact )?(?:instructions|system prompt|directives|rules you were given)\b"),
    ("system_prompt_exfiltration", r"\b(?:repeat|print|output|reveal) (?:all |everything |the (?:text|words) )(?:above|before this|preceding)"),
    ("system_prompt_exfiltration", r"\b(?:beginning|start) with [\"']?you are\b"),
)


@dataclass(frozen=True)
class Finding:
    rule: str
    match: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.match!r}"


def _tags_as_ascii(text: str) -> str:
    """U+E0020..U+E007E mirror printable ASCII ("ASCII smuggling"): decoded, so the hidden words are screened too."""
    return "".join(chr(ord(c) - 0xE0000) if 0xE0020 <= ord(c) <= 0xE007E else c for c in text)


class PromptScreen:
    """`findings(text)` lists every rule the text breaks; an empty list means the text passes."""

    def __init__(self, special_tokens: Iterable[str] = (), max_base64_chars: int = 120, max_hex_chars: int = 128):
        tokens = sorted({t.casefold() for t in (*DEFAULT_SPECIAL_TOKENS, *special_tokens) if t}, key=len, reverse=True)
        self.rules: list[tuple[str, re.Pattern, bool]] = [(n, re.compile(p), False) for n, p in CHARACTER_RULES]
        normalised_rules = [
            ("special_token", "|".join(re.escape(t) for t in tokens)),
            ("chat_marker", r"<\|[a-z0-9_]{2,40}\|>"),
            *PHRASE_RULES,
            # Runs of the base64 alphabet with at least one digit or +/ (a long identifier is letters only).
            ("encoded_blob", rf"(?<![a-z0-9+/])(?=[a-z0-9+/]*[0-9+/])[a-z0-9+/]{{{max_base64_chars},}}={{0,2}}"),
            ("encoded_blob", rf"\b(?:0x)?[0-9a-f]{{{max_hex_chars},}}\b|(?:\\x[0-9a-f]{{2}}){{{max_hex_chars // 2},}}"),
        ]
        self.rules += [(name, re.compile(pattern), True) for name, pattern in normalised_rules]

    @staticmethod
    def normalise(text: str) -> str:
        text = unicodedata.normalize("NFKC", _tags_as_ascii(text))
        text = "".join(c for c in text if unicodedata.category(c) not in ("Cf", "Cc") or c in "\n\t")
        return re.sub(r"[ \t]+", " ", text.casefold())

    def findings(self, text: str) -> list[Finding]:
        normalised = self.normalise(text)
        found: list[Finding] = []
        for name, pattern, on_normalised in self.rules:
            match = pattern.search(normalised if on_normalised else text)
            if match:
                found.append(Finding(name, match.group(0)[:60]))
        return found


def prompt_texts(route: str, body: dict) -> list[str]:
    """The client-written text of a request: completions' prompt(s), and chat content of every role but the
    operator's own (system/developer), whose instructions the screen exists to protect."""
    if route == "completions":
        prompt = body.get("prompt", "")
        prompts = prompt if isinstance(prompt, list) else [prompt]
        return [p for p in prompts if isinstance(p, str)]  # token-id prompts bypass text rules: see docs
    texts = []
    for message in body.get("messages") or []:
        if not isinstance(message, dict) or message.get("role") in ("system", "developer"):
            continue
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        texts += [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return texts
