"""Channel-attention blocks behind one registry."""

from .gate import Gate
from .registry import (
    INITS,
    AttentionInfo,
    IdentityBlend,
    attention_block,
    attention_info,
    list_attention,
    register_attention,
)

__all__ = [
    "INITS",
    "AttentionInfo",
    "Gate",
    "IdentityBlend",
    "attention_block",
    "attention_info",
    "list_attention",
    "register_attention",
]
