"""The demo's loop through the Python API instead of the CLI: build → train → talk to the result.

The CLI commands are thin wrappers over these functions, so this runs exactly what
`make demo` runs (shortened to a few optimizer steps so it finishes in about a minute on CPU):

    .venv/bin/python examples/python_api.py [--steps 8] [--out runs/api-demo]
"""

from __future__ import annotations

import argparse

from instructune.bundle import load_bundle
from instructune.config import load_config
from instructune.curation.build import run_build
from instructune.inference.engine import Engine, SamplingParams
from instructune.training.run import run_train

QUESTION = (
    "Is the following sentence a concrete political promise?\n\n"
    "We will build 10,000 km of subway lines in the next ten years.\n\n"
    "OPTIONS:\n- True\n- False"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", default="runs/api-demo")
    args = parser.parse_args()

    # 1. Labelled sentences → instruction rows (the same config `make demo` builds with).
    built = run_build(
        load_config("configs/build-demo.yaml", [f"output_dir={args.out}/data"]), overwrite=True
    )
    print(built.text)

    # 2. LoRA fine-tune on the built rows; overrides are the CLI's dotted `key=value` strings.
    cfg = load_config(
        "configs/demo.yaml",
        [
            f"data.train.0.path={args.out}/data/train.jsonl",
            f"train.max_steps={args.steps}",
            f"output_dir={args.out}/run",
        ],
    )
    result = run_train(cfg, overwrite=True)  # rerunning the example replaces its last run
    print({k: result.metrics[k] for k in ("global_step", "final_loss")})

    # 3. Load the run (base + adapter + its exact template) and ask it, greedy.
    engine = Engine.from_bundle(load_bundle(result.out_dir))
    [answer] = engine.chat(
        [[{"role": "user", "content": QUESTION}]], SamplingParams(max_new_tokens=8)
    )
    print(f"{answer.text!r} ({answer.finish_reason}, {answer.completion_tokens} tokens)")


if __name__ == "__main__":
    main()
