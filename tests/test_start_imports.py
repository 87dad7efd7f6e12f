"""What a node imports to start: heavy libraries only where they are used (issue 3's memory
target). A fresh interpreter, since this test process has imported them already."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import cis.node, cis.api.app, cis.api.server, cis.skills.git.skill, cis.skills.memory.skill
loaded = sorted({name.split(".")[0] for name in sys.modules} & {"dulwich", "fastapi", "pydantic"})
print(",".join(loaded))
"""


def test_node_start_modules_do_not_import_dulwich_or_fastapi() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == ""


def test_git_serving_still_loads_dulwich_when_used() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, cis.skills.git.serve; print('dulwich' in sys.modules)",
        ],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "True"
