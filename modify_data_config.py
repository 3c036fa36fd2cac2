"""Move the <image> tag to the front of its turn, as LLaVA's training does to every record.

    python modify_data_config.py IN.json OUT.json

γ-MoD's data step: with the image right after the system prompt, the routable prefix (system
prompt + image tokens) is contiguous. gamma-mod training applies the same rule itself, so this
writes out, for inspection or reuse, exactly the conversations the model is trained on.
A thin wrapper over gamma_mod.data.convert.move_image_to_front.
"""

import argparse
import json
import sys

from gamma_mod.data.convert import move_image_to_front
from gamma_mod.data.formats import DataError, read_records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="LLaVA-format JSON (e.g. llava_v1_5_mix665k.json)")
    parser.add_argument("output", help="where to write the modified JSON")
    args = parser.parse_args(argv)
    try:
        records = read_records(args.input)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    new_records, changed = move_image_to_front(records)
    with open(args.output, "w") as f:
        json.dump(new_records, f, ensure_ascii=False)
    print(f"changed {changed} of {len(records)} records; wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
