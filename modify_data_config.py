"""Move the <image> tag to the front of its turn, as LLaVA's training does to every record.

    python modify_data_config.py IN.json OUT.json [--debug]

γ-MoD's data step: with the image right after the system prompt, the routable prefix (system
prompt + image tokens) is contiguous. gamma-mod training applies the same rule itself, so this
writes out, for inspection or reuse, exactly the conversations the model is trained on.
A thin wrapper over gamma_mod.data.convert.move_image_to_front.
Errors follow gamma-mod's rule (gamma_mod.errors): one line on stderr, exit code 1 for a bad input
file, 2 for bad arguments; `--debug` or GAMMA_MOD_DEBUG=1 adds the traceback.
"""

import json
import sys
from pathlib import Path

from gamma_mod.data.convert import move_image_to_front
from gamma_mod.data.formats import read_records
from gamma_mod.errors import ArgumentParser, UsageError, debug_enabled, report_errors


def convert(argv: list[str]) -> int:
    parser = ArgumentParser(prog="modify_data_config.py", description=__doc__.splitlines()[0])
    parser.add_argument("input", help="LLaVA-format JSON (e.g. llava_v1_5_mix665k.json)")
    parser.add_argument("output", help="where to write the modified JSON")
    parser.add_argument("--debug", action="store_true", help="print the traceback of expected errors too")
    args = parser.parse_args(argv)
    output = Path(args.output)
    if output.exists() and output.resolve() == Path(args.input).resolve():
        raise UsageError(f"output {output} is the input file: write the modified JSON to a new file")
    if not output.parent.is_dir():
        raise UsageError(f"output {output}: no folder {output.parent}")
    records = read_records(args.input)
    new_records, changed = move_image_to_front(records)
    with open(output, "w") as f:
        json.dump(new_records, f, ensure_ascii=False)
    print(f"changed {changed} of {len(records)} records; wrote {output}")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return report_errors("modify_data_config.py", lambda: convert(argv), debug_enabled(argv))


if __name__ == "__main__":
    raise SystemExit(main())
