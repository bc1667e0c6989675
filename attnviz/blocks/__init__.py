"""Attention blocks behind one registry (:mod:`.registry`), built-ins in :mod:`.catalog`."""

from . import catalog  # noqa: F401  (registers the built-in blocks)
from .attention_map import AttentionMap
from .gate import Gate
from .query_maps import bilinear_query_maps, global_query_maps, halo_query_maps
from .registry import (
    INITS,
    KINDS,
    SITE_ARGS,
    AttentionInfo,
    IdentityBlend,
    attention_block,
    attention_info,
    list_attention,
    register_attention,
)

__all__ = [
    "INITS",
    "KINDS",
    "SITE_ARGS",
    "AttentionInfo",
    "AttentionMap",
    "Gate",
    "IdentityBlend",
    "attention_block",
    "attention_info",
    "bilinear_query_maps",
    "global_query_maps",
    "halo_query_maps",
    "list_attention",
    "register_attention",
]
