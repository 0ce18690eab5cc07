"""Bring-your-own prompts: a YAML or JSON file with a template of named slots, few-shot turns included.

```yaml
system: You predict user choices.            # optional
shots:                                        # optional few-shot turns, literal text
  - user: "Persona: ...\\nResponse 1: ...\\nResponse 2: ..."
    assistant: "2"
user: "Persona: {persona}\\nPrompt: {prompt}\\nResponse 1: {first}\\nResponse 2: {second}\\nAnswer 1 or 2."
```

Slots are written `{name}` (literal braces doubled, `{{`/`}}`, as in Python's `str.format`);
each command names the slots it fills, and a file that uses any other slot is refused with its
path. A file whose `user` holds no `system`/`shots` becomes a single user message. The file's
content enters the generation-cache key, so editing it never reuses stale outputs.
"""
from __future__ import annotations

import hashlib
import json
import string
from pathlib import Path

import yaml
from pydantic import ValidationError

from personalign.config import ConfigError, StrictModel
from personalign.llm.base import Message


class Turn(StrictModel):
    user: str
    assistant: str


class PromptFile(StrictModel):
    """A chat prompt with named slots: optional system message, few-shot turns, the query."""

    system: str | None = None
    shots: list[Turn] = []
    user: str
    source: str = "<prompt>"

    def slots(self) -> set[str]:
        texts = [self.user, *([self.system] if self.system else [])]
        return {name for t in texts for _, name, _, _ in string.Formatter().parse(t) if name}

    @property
    def version(self) -> str:
        blob = json.dumps(self.model_dump(exclude={"source"}), sort_keys=True, ensure_ascii=False)
        return "file:" + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    def messages(self, **values: str) -> list[Message]:
        out: list[Message] = [{"role": "system", "content": self.system.format_map(values)}] if self.system else []
        for turn in self.shots:
            out += [{"role": "user", "content": turn.user}, {"role": "assistant", "content": turn.assistant}]
        out.append({"role": "user", "content": self.user.format_map(values)})
        return out


def task_version(version: str, prompt_file: PromptFile | None) -> str:
    """The cache-key task name of a built-in prompt `version`, or of the prompt file replacing it."""
    return version if prompt_file is None else f"{version}+{prompt_file.version}"


def load_prompt_file(path: str | Path | None, allowed: set[str], required: set[str] = frozenset()) -> PromptFile | None:
    """Read and check a prompt file: it may use only the `allowed` slots and must use the `required` ones
    (None when `path` is None: the built-in prompt)."""
    if path is None:
        return None
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the prompt file ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML/JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a prompt file is a mapping with `user` (and optional `system`, `shots`)")
    try:
        prompt = PromptFile.model_validate({**data, "source": str(path)})
        used = prompt.slots()
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"{path}: field '{'.'.join(map(str, err['loc']))}': {err['msg']}") from None
    except ValueError as e:
        raise ConfigError(f"{path}: bad template ({e})") from None
    if unknown := used - allowed:
        raise ConfigError(f"{path}: unknown slot(s) {sorted(unknown)}; this command fills {sorted(allowed)}")
    if missing := set(required) - used:
        raise ConfigError(f"{path}: the template must use slot(s) {sorted(missing)}")
    return prompt
