"""Editing YAML sequences in a ruamel.yaml round-trip document without losing comments.

ruamel.yaml (0.19) attaches a comment that follows a list to the list's last item, so deleting
or reordering items drops it. An emptied list that still carries comments is dumped as
invalid YAML, because the comments land between the key and `[]`. `replace_sequence` keeps
the comment text in both cases.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.tokens import CommentToken


def _comment_tokens(slot: Any) -> list[CommentToken]:
    if slot is None:
        return []
    if isinstance(slot, CommentToken):
        return [slot]
    tokens: list[CommentToken] = []
    for item in slot:
        tokens.extend(_comment_tokens(item))
    return tokens


def _comment_lines(tokens: list[CommentToken]) -> list[str]:
    lines = []
    for token in tokens:
        for line in token.value.splitlines():
            line = line.strip()
            if line.startswith("#"):
                lines.append(line[1:].strip())
    return lines


def replace_sequence(parent: MutableMapping[str, Any], key: str, values: Sequence[Any]) -> None:
    """Make `parent[key]` a sequence holding `values`, keeping the comments it had.

    Items that stay keep their own end-of-line comments; the comment block after the old
    last item moves to the new last item. When the list becomes empty, every comment of it
    moves above the key, because ruamel.yaml cannot place comments around `[]`.
    """
    seq = parent.get(key)
    if not isinstance(seq, CommentedSeq):
        seq = CommentedSeq()
        parent[key] = seq
    old = list(seq)
    old_comments = dict(seq.ca.items)
    last_old = len(old) - 1

    if not values:
        tokens = _comment_tokens(seq.ca.comment)
        for index in sorted(old_comments):
            tokens.extend(_comment_tokens(old_comments[index]))
        if isinstance(parent, CommentedMap):
            tokens.extend(_comment_tokens(parent.ca.items.pop(key, None)))
        del seq[:]
        seq.ca.items.clear()
        seq.ca.comment = None
        lines = _comment_lines(tokens)
        if lines and isinstance(parent, CommentedMap):
            parent.yaml_set_comment_before_after_key(key, before="\n".join(lines))
        return

    new_comments: dict[int, Any] = {}
    for new_index, value in enumerate(values):
        if value in old:
            old_index = old.index(value)
            if old_index != last_old and old_index in old_comments:
                new_comments[new_index] = old_comments[old_index]
    trailing = old_comments.get(last_old)
    if trailing is not None:
        last_new = len(values) - 1
        if last_new in new_comments:
            own = new_comments[last_new][0]
            after = trailing[0]
            if own is not None and after is not None:
                merged = own.value.rstrip("\n") + "\n" + after.value.lstrip("\n")
                new_comments[last_new] = [CommentToken(merged, own.start_mark), None, None, None]
            else:
                new_comments[last_new] = trailing
        else:
            new_comments[last_new] = trailing

    del seq[:]
    seq.extend(values)
    seq.ca.items.clear()
    seq.ca.items.update(new_comments)
